"""One figure style (gpt2lab.base.figures): every figure is the column's width with no text below MIN_PT."""

import ast
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from gpt2lab.base import figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _ladder():
    from gpt2lab.measure.results import collect

    ladders, _ = collect(ROOT / "results")
    return next(run for run in ladders if "cpu" in run.path.name).plot()


def _roofs():
    from gpt2lab.lessons.roofline import Roofs, plot_roofs

    return plot_roofs(Roofs("NVIDIA H200", "cuda", 8192, 1 << 30, {"fp32": 5.1e13, "bf16": 7.0e14}, 4.1e12,
                            {"fp32": 6.7e13, "bf16": 9.9e14}, 4.8e12))


def _roofline():
    from gpt2lab.engine.model import get_config
    from gpt2lab.lessons.roofline import forward_operations, plot_roofline

    return plot_roofline(forward_operations(get_config("gpt2"), 16, 1024, bytes_per_value=2), 9.9e14, 4.8e12)


def _schedule():
    from gpt2lab.lessons.plots import plot_schedule
    from gpt2lab.run.config import get_preset

    return plot_schedule({"the video's 124M run": get_preset("gpt2-124m-fineweb10b"), "smoke": get_preset("smoke")})


def _losses(tmp_path):
    from gpt2lab.lessons.plots import plot_losses

    (tmp_path / "log.jsonl").write_text('{"type": "train", "step": 0, "loss": 9.0}\n'
                                        '{"type": "val", "step": 0, "val_loss": 9.5}\n')
    return plot_losses(tmp_path, baselines={"unigram": 7.0})


def _anatomy():
    from gpt2lab.lessons.gpu import plot_anatomy

    return plot_anatomy()


def _closing():
    from gpt2lab.lessons.closing import closing_figure
    from gpt2lab.measure.runlog import read_train_text

    return closing_figure({"H200, Tiny Shakespeare": read_train_text(ROOT / "results/h200-2026-11-26/train.txt")})


def _short_runs():
    from gpt2lab.lessons.plots import plot_short_runs
    from gpt2lab.lessons.short_runs import ShortRun

    runs = {name: ShortRun([9.0, 8.0, 7.5], [2.0, 1.5, 1.2], [1e-3] * 3) for name in ("warm-up", "none")}
    return plot_short_runs(runs, title="first 3 steps")


def _representable():
    from gpt2lab.lessons.formats import plot_representable

    return plot_representable()


def _position_scores():
    from gpt2lab.lessons.past_recipe import plot_position_scores, position_scores

    return plot_position_scores(position_scores())


def _singular_values():
    from gpt2lab.lessons.past_recipe import one_step_updates, plot_singular_values

    return plot_singular_values(one_step_updates())


def _race():
    from gpt2lab.lessons.recipe_race import RaceRun, plot_race

    val = [(0, 10.8, 0.0), (20, 7.0, 4.0), (40, 6.1, 8.0)]
    return plot_race({r: RaceRun(r, 1024, val, 200.0, 9.0, (None, None)) for r in ("gpt2", "modern")})


# Every plotting function in the package, with inputs; test_every_plotting_function_is_checked keeps it complete.
PLOTS = {"plot_ladder": _ladder, "plot": _ladder, "plot_roofs": _roofs, "plot_roofline": _roofline,
         "plot_schedule": _schedule, "plot_losses": _losses, "plot_representable": _representable, "plot_anatomy": _anatomy,
         "closing_figure": _closing, "plot_short_runs": _short_runs, "plot_position_scores": _position_scores,
         "plot_singular_values": _singular_values, "plot_race": _race}


def test_every_plotting_function_is_checked():
    found = set()
    for path in (ROOT / "gpt2lab").rglob("*.py"):
        if path.name == "figures.py":  # the style itself
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and (node.name.startswith("plot") or _makes_a_figure(node)):
                found.add(node.name)
    assert found == set(PLOTS), "a plotting function without a style check here: add it to PLOTS"


def _makes_a_figure(function: ast.FunctionDef) -> bool:
    """Whether the function calls subplots/figure itself (figures.subplots included), whatever its name."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("subplots", "figure")
               for n in ast.walk(function))


def test_only_the_style_module_sizes_figures():
    for path in (ROOT / "gpt2lab").rglob("*.py"):
        if path.name == "figures.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert not FIGSIZE.search(text), f"{path.relative_to(ROOT)}: make the figure with gpt2lab.base.figures.subplots"
        small = [float(v) for v in FONTSIZE.findall(text) if float(v) < figures.MIN_PT]
        assert not small, f"{path.relative_to(ROOT)}: font sizes {small} are below {figures.MIN_PT:g} pt"


@pytest.mark.parametrize("name", sorted(set(PLOTS) - {"plot"}))
def test_plotting_function_follows_the_style(name, tmp_path):
    make = PLOTS[name]
    fig = make(tmp_path) if "tmp_path" in make.__code__.co_varnames else make()
    assert figures.problems(fig) == []


def test_problems_names_a_wide_figure_and_small_text():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5), dpi=figures.DPI)
    ax.set_title("tiny", fontsize=6)
    found = figures.problems(fig)
    assert found[0] == f"figure is 14.0 in wide: the column is {figures.COLUMN_IN} in"
    assert "text 'tiny' is 6 pt, below 9" in found
    fig, axes = figures.subplots(2, 2)
    axes[0, 0].bar_label(axes[0, 0].bar([0, 1], [1, 2]), fontsize=figures.MIN_PT)
    figures.legend_below(fig, *axes[0, 0].get_legend_handles_labels())
    assert (fig.get_figwidth(), fig.get_figheight(), fig.dpi) == (figures.COLUMN_IN, 2 * figures.ROW_IN, figures.DPI)
    assert figures.problems(fig) == []


# In the chapters, figures come from figures.subplots (never a figsize of their own) and name no font size
# below the style's smallest.
FIGSIZE = re.compile(r"plt\.(subplots|figure)\(|figsize=")
FONTSIZE = re.compile(r"fontsize=([\d.]+)")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9]*.md")), ids=lambda p: p.stem)
def test_chapter_figures_use_the_style(path):
    text = path.read_text(encoding="utf-8")
    assert not FIGSIZE.search(text), "make the figure with gpt2lab.base.figures.subplots"
    assert all(float(size) >= figures.MIN_PT for size in FONTSIZE.findall(text))
