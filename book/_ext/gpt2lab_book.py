"""Sphinx glue for the gpt2lab book.

- Every notebook page offers its executed .ipynb for download. sphinx-book-theme copies a MyST notebook's
  executed .ipynb into `_sources/` (where its download menu links it) only when a launch button (Binder,
  Colab, thebe, ...) is configured. The book has none (it is an offline site), so this does the copy
  itself and tells the theme the file is there.
- A light/dark default mode for the theme: without one, a reader's first visit logs "Got invalid theme
  mode" as a console error on every page (the theme reads an empty mode before any is stored).
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


def default_theme_mode(app, config):
    config.html_context = {**config.html_context}
    config.html_context.setdefault("default_mode", "auto")  # read by the pydata theme's layout.html


def setup(app):
    app.connect("config-inited", default_theme_mode)
    # after the theme prepares its header buttons (priority 500), before it renders them (501)
    app.connect("html-page-context", offer_ipynb, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
