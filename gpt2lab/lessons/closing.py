"""The video's closing figure: loss and HellaSwag against tokens trained on, with the cited yardsticks.

The curves come from run logs (`gpt2lab.measure.runlog`); the horizontal lines and the video's end points from
`gpt2lab.measure.reference.FULL_RUN`. The x axis is tokens on a log scale, so a run of a million tokens and the
video's 10 and 40 billion fit on one figure.
"""

from __future__ import annotations

from gpt2lab.base.stats import wilson_interval
from gpt2lab.measure.reference import FULL_RUN
from gpt2lab.measure.runlog import RunCurves
from gpt2lab.run.hellaswag import CHANCE




def closing_figure(runs: dict[str, RunCurves], epoch_tokens: float = 10e9):
    """Two panels against tokens: train and val loss of each run, with OpenAI GPT-2 124M's val loss on
    FineWeb-Edu; HellaSwag acc_norm of each run (95% interval), with GPT-2's, GPT-3 Small's and the video's
    end points. `epoch_tokens` draws a line where one pass over the 10B-token sample ends."""
    from gpt2lab.base import figures

    fig, (left, right) = figures.subplots(2, 1, height=8.6)
    for name, run in runs.items():
        def x(step, run=run):  # a log axis has no 0: step 0 (nothing trained yet) sits at half a step's tokens
            return max(run.tokens(step), run.tokens_per_step / 2)

        line = left.plot([x(s) for s, _ in run.train], [loss for _, loss in run.train], lw=1.2,
                         label=f"{name}: train")[0]
        if run.val:
            left.plot([x(s) for s, _ in run.val], [v for _, v in run.val], "o", color=line.get_color(),
                      label=f"{name}: val")
        if run.hellaswag:
            xs = [x(s) for s, _, _ in run.hellaswag]
            ys = [a for _, a, _ in run.hellaswag]
            bounds = [wilson_interval(round(a * n), n) for _, a, n in run.hellaswag]
            err = [[y - lo for y, (lo, _) in zip(ys, bounds)], [hi - y for y, (_, hi) in zip(ys, bounds)]]
            right.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, color=line.get_color(),
                           label=f"{name} (n={run.hellaswag[0][2]})")
    gpt2_val = FULL_RUN["gpt2_val_loss"].value
    left.axhline(gpt2_val, color="tab:red", ls="--", lw=1.2, label=f"OpenAI GPT-2 124M, FineWeb-Edu val: {gpt2_val:g}")
    for ax in (left, right):
        ax.axvline(epoch_tokens, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("tokens trained on (log scale)")
    left.text(epoch_tokens, left.get_ylim()[1], "1 epoch of \nsample-10BT ", va="top", ha="right",
              fontsize=figures.MIN_PT, color="grey")
    left.set(ylabel="loss (nats per token)", title="loss")
    for key, color in (("gpt2_hellaswag", "tab:red"), ("gpt3_hellaswag", "tab:green")):
        cited = FULL_RUN[key]
        right.axhline(cited.value, color=color, ls="--", lw=1.2, label=f"{cited.what.split(',')[0]}: {cited.value:g}")
    right.axhline(CHANCE, color="grey", ls=":", lw=1.2, label=f"chance: {CHANCE}")
    for key, tokens in (("run10b_hellaswag", 10e9), ("run40b_hellaswag", 40e9)):
        right.plot(tokens, FULL_RUN[key].value, "*", ms=12, color="black")
    right.plot([], [], "*", ms=10, color="black", label="the video at 10B, 40B tokens (read off its plot)")
    right.set(ylabel="HellaSwag acc_norm", title="HellaSwag")
    left.legend()
    right.legend(loc="lower right")
    return fig
