"""Sphinx glue for the gpt2lab book: every notebook page offers its executed .ipynb for download.

sphinx-book-theme copies a MyST notebook's executed .ipynb into `_sources/` (where its download menu
links it) only when a launch button (Binder, Colab, thebe, ...) is configured. The book has none (it is
an offline site), so this does the copy itself and tells the theme the file is there.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def offer_ipynb(app, pagename, templatename, context, doctree):
    source = Path(app.env.doc2path(pagename))
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if source.suffix != ".md" or not executed.is_file():
        return  # a plain Markdown page: no notebook to offer
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # after the theme prepares its header buttons (priority 500), before it renders them (501)
    app.connect("html-page-context", offer_ipynb, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
