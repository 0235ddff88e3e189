import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from gpt2lab.run.config import get_preset  # noqa: E402
from gpt2lab.engine.optim import lr_at  # noqa: E402
from gpt2lab.lessons.plots import plot_losses, plot_schedule, run_table  # noqa: E402


def test_schedule_plot_shows_the_schedule():
    cfg = get_preset("gpt2-124m-fineweb10b")
    fig = plot_schedule({"124M": cfg, "smoke": get_preset("smoke")})
    line = fig.axes[0].lines[0]
    x, y = line.get_data()
    assert x[0] == 0 and x[-1] <= cfg.max_steps
    assert np.allclose(y, [lr_at(int(s), cfg.optim()) for s in x])
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "smoke"


def test_loss_plot_reads_the_log(tmp_path):
    (tmp_path / "log.jsonl").write_text(
        '{"type": "train", "step": 0, "loss": 9.0}\n{"type": "val", "step": 0, "val_loss": 9.5}\n'
        '{"type": "train", "step": 1, "loss": 8.0}\n'
    )
    fig = plot_losses(tmp_path, baselines={"unigram": 7.0, "bigram table": 6.0})
    train, val, unigram, bigram = fig.axes[0].lines
    assert list(train.get_ydata()) == [9.0, 8.0] and list(val.get_ydata()) == [9.5]
    assert list(unigram.get_ydata()) == [7.0, 7.0] and list(bigram.get_ydata()) == [6.0, 6.0]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][2:] == ["unigram 7.00", "bigram table 6.00"]


def test_run_table_has_one_row_per_validation(tmp_path):
    lines = ['{"type": "val", "step": 0, "val_loss": 10.0}']
    for step in range(4):
        lines.append(f'{{"type": "train", "step": {step}, "loss": {8 - step}, "lr": 0.1, "grad_norm": 2.0, "ms": 10.0}}')
    lines.append('{"type": "val", "step": 4, "val_loss": 6.5}')
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    header, first, second = run_table(tmp_path).splitlines()
    assert header.split() == ["step", "train", "loss", "val", "loss", "lr", "grad", "norm", "ms/step"]
    assert first.split() == ["0", "-", "10.0000"]
    assert second.split() == ["4", "6.5000", "6.5000", "1.00e-01", "2.000", "10.0"]  # mean of 8, 7, 6, 5


def test_plot_short_runs_draws_loss_and_norm_per_run():
    from gpt2lab.lessons.plots import plot_short_runs
    from gpt2lab.lessons.short_runs import ShortRun

    fig = plot_short_runs({"a": ShortRun(loss=[3.0, 2.0], grad_norm=[2.0, 0.5]), "b": ShortRun(loss=[3.0, 1.0],
                          grad_norm=[2.0, 3.0])}, title="t")
    loss_ax, norm_ax = fig.axes[:2]
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[3.0, 2.0], [3.0, 1.0]]
    assert norm_ax.get_yscale() == "log"
    assert [list(line.get_ydata()) for line in norm_ax.lines][:2] == [[2.0, 0.5], [2.0, 3.0]]
