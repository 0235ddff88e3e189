"""A table for results: fixed-width text in a terminal, an HTML table in a notebook.

Generic on purpose (no knowledge of rungs or GPT-2), so every layer can print one.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass
class Table:
    """Rows of cells under a header. Prints as fixed-width text; a notebook renders it as an HTML table."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        widths = [max(len(str(c)) for c in col) for col in zip(self.header, *self.rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        out = [self.caption] if self.caption else []
        out += [line(self.header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [line(r) for r in self.rows] + list(self.notes)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        esc = lambda c: html.escape(str(c))  # noqa: E731
        head = "".join(f"<th>{esc(c)}</th>" for c in self.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        caption = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        notes = "".join(f"<p><em>{esc(n)}</em></p>" for n in self.notes)
        return f'<table class="gpt2lab-table">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}'
