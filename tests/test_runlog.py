from pathlib import Path

import pytest

from gpt2lab.measure.runlog import parse_train_text, read_train_text

ROOT = Path(__file__).resolve().parents[1]

TEXT = """\
gpt2: 1,000 parameters on cpu x1
2,048 tokens/step = 4 x 512 x 1 process(es) x 1 micro-steps; new run in RUN
step     0 | val loss 10.9000
step     0 | hellaswag acc_norm 0.2500 (5/20)
step     0 | loss 10.950000 | lr 1.0e-04 | norm 3.0 | 10.0 ms | 1 tok/s
step     5 | loss 7.500000 | lr 1.0e-04 | norm 1.0 | 10.0 ms | 1 tok/s
sample: "step 9 | loss 1.0 | not a log line"
2,048 tokens/step = 4 x 512 x 1 process(es) x 1 micro-steps; resuming at step 5 in RUN
step    10 | val loss 6.5000
step    10 | loss 6.400000 | lr 1.0e-04 | norm 1.0 | 10.0 ms | 1 tok/s
"""


def test_parse_reads_all_three_curves_across_a_resume():
    c = parse_train_text(TEXT)
    assert c.tokens_per_step == 2048
    assert c.train == [(0, 10.95), (5, 7.5), (10, 6.4)]
    assert c.val == [(0, 10.9), (10, 6.5)]
    assert c.hellaswag == [(0, 0.25, 20)]
    assert c.tokens(10) == 20480


def test_parse_rejects_text_that_is_not_a_train_log():
    with pytest.raises(ValueError, match="tokens/step"):
        parse_train_text("step 1 | loss 2.0 |\n")
    with pytest.raises(ValueError, match="disagrees"):
        parse_train_text("8 tokens/step\nstep 0 | hellaswag acc_norm 0.9000 (1/4)\n")


def test_the_committed_h200_log():
    c = read_train_text(ROOT / "results" / "h200-2026-11-26" / "train.txt")
    assert c.tokens_per_step == 16 * 1024
    assert c.val[0] == (0, 10.9444) and c.val[-1] == (59, 6.1731)
    assert [s for s, _, _ in c.hellaswag] == [0, 20, 40, 59] and c.hellaswag[-1][1:] == (0.25, 256)
    assert c.train[-1] == (50, 6.030886)


def test_closing_figure_draws_the_cited_lines():
    import matplotlib

    matplotlib.use("Agg")
    from gpt2lab.lessons.closing import closing_figure
    from gpt2lab.measure.reference import FULL_RUN

    fig = closing_figure({"run": parse_train_text(TEXT)})
    left, right = fig.axes
    flat = lambda ax: {round(float(y), 4) for line in ax.get_lines() for y in line.get_ydata()}
    assert FULL_RUN["gpt2_val_loss"].value in flat(left) and {10.95, 7.5, 6.4} <= flat(left)
    assert {FULL_RUN["gpt2_hellaswag"].value, FULL_RUN["gpt3_hellaswag"].value, 0.25} <= flat(right)
    assert left.get_xscale() == "log"
