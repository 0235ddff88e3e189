"""One style for every figure: sized for the book's text column, with text that stays readable there.

A figure drawn 14 inches wide and shown in a column about 7 inches wide has its 8-point labels shrunk to
4 points. Every figure in gpt2lab is therefore drawn at the column's width (`COLUMN_IN` at `DPI`, so the page
shows it at about its natural size), with no text smaller than `MIN_PT`, panels stacked or side by side as
`subplots` lays them out, and legends below the axes when they would cover the data. `problems(fig)` lists
what breaks these rules; the tests run it on every plotting function and every chapter's figures, and the
browser test checks that the built page shows each image at a size where `MIN_PT` is still readable.

Generic: matplotlib only, nothing of GPT-2.
"""

from __future__ import annotations

COLUMN_IN = 7.0  # the book's text column at a 1280 px window is about 700-750 CSS px; at DPI this is 700 px
DPI = 100
MIN_PT = 9.0  # the smallest text in any figure, in points at DPI: 12.5 px when the page shows it unscaled
ROW_IN = 3.2  # height of one row of panels

STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": MIN_PT,
    "ytick.labelsize": MIN_PT,
    "legend.fontsize": MIN_PT,
    "legend.title_fontsize": MIN_PT,
    "figure.titlesize": 11,
    "legend.framealpha": 0.85,
}


def use() -> None:
    """Apply the style to matplotlib's defaults (every figure made afterwards in this process)."""
    import matplotlib

    matplotlib.rcParams.update(STYLE)


def subplots(rows: int = 1, cols: int = 1, *, height: float | None = None, **kwargs):
    """`plt.subplots` at the column's width, `ROW_IN` per row unless `height` is given, with constrained
    layout (labels, titles and an `outside` legend never overlap). Two panels side by side get 3.5 inches
    each: enough for a few ticks and a short title; anything denser goes one panel per row."""
    import matplotlib.pyplot as plt

    use()
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(rows, cols, figsize=(COLUMN_IN, height or ROW_IN * rows), **kwargs)


def legend_below(fig, handles=None, labels=None, ncols: int = 1, **kwargs):
    """A figure legend under the panels (`outside lower center`): it covers no data, whatever its length."""
    if handles is None:
        pairs = {l: h for ax in fig.axes for h, l in zip(*ax.get_legend_handles_labels())}
        handles, labels = list(pairs.values()), list(pairs)
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, **kwargs)


def problems(fig) -> list[str]:
    """What in `fig` breaks the style: wider than the column, or visible text smaller than MIN_PT."""
    out = []
    width = fig.get_figwidth()
    if width > COLUMN_IN + 1e-6:
        out.append(f"figure is {width:.1f} in wide: the column is {COLUMN_IN} in")
    if fig.dpi != DPI:
        out.append(f"figure has dpi {fig.dpi:g}, the style's is {DPI}")
    fig.canvas.draw()  # tick labels exist only once drawn
    seen = set()
    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")):
        words = text.get_text().strip()
        if not words or not text.get_visible() or text.get_fontsize() >= MIN_PT - 1e-6:
            continue
        if words not in seen:
            seen.add(words)
            out.append(f"text {words[:40]!r} is {text.get_fontsize():g} pt, below {MIN_PT:g}")
    return out
