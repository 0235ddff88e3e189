"""Figures the book shows, built from run logs and configs (so a notebook only calls them)."""

from __future__ import annotations

from gpt2lab.run.config import TrainConfig
from gpt2lab.engine.optim import lr_at
from gpt2lab.run.train import read_log


def plot_schedule(configs: dict[str, TrainConfig]):
    """Learning rate against step, one panel per named config (two side by side, more in rows of two)."""
    from gpt2lab.base import figures

    cols = min(2, len(configs))
    rows = -(-len(configs) // cols)
    fig, axes = figures.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(configs):]:
        ax.set_visible(False)
    for ax, (name, cfg) in zip(axes.flat, configs.items()):
        steps = range(0, cfg.max_steps + 1, max(1, cfg.max_steps // 500))
        ax.plot(list(steps), [lr_at(s, cfg.optim()) for s in steps])
        ax.axvline(cfg.warmup_steps, color="grey", ls=":", lw=1)
        ax.set(title=name, xlabel="step", ylabel="learning rate")
    return fig


def plot_losses(out_dir, baselines: dict[str, float] | None = None, title: str = "training run"):
    """Train loss per step, val loss at its evaluations, and a dashed line per named baseline."""
    from gpt2lab.base import figures

    train, val = read_log(out_dir, "train"), read_log(out_dir, "val")
    fig, ax = figures.subplots(height=3.8)
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, alpha=0.7, label="train loss")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    for (name, value), color in zip((baselines or {}).items(), ("red", "purple", "grey")):
        ax.axhline(value, color=color, ls="--", lw=1, label=f"{name} {value:.2f}")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.legend()
    return fig


def run_table(out_dir) -> str:
    """A compact text table of a run: one row per validation (taken before that step trains), with the train
    loss, gradient norm and step time averaged over the steps since the previous validation.

    Easier to read on a page than the trainer's line per step (which `log.jsonl` keeps in full)."""
    train, val = read_log(out_dir, "train"), read_log(out_dir, "val")
    rows = [f"{'step':>6} {'train loss':>10} {'val loss':>9} {'lr':>9} {'grad norm':>9} {'ms/step':>8}"]
    start = 0
    for v in val:
        window = [r for r in train if start <= r["step"] < v["step"]]
        start = v["step"]
        if not window:
            rows.append(f"{v['step']:>6} {'-':>10} {v['val_loss']:>9.4f}")
            continue
        mean = lambda key: sum(r[key] for r in window) / len(window)  # noqa: E731
        rows.append(f"{v['step']:>6} {mean('loss'):>10.4f} {v['val_loss']:>9.4f} {window[-1]['lr']:>9.2e} "
                    f"{mean('grad_norm'):>9.3f} {mean('ms'):>8.1f}")
    return "\n".join(rows)


def plot_short_runs(runs: dict, title: str):
    """Train loss (left) and gradient norm before clipping (right, log scale, the clip level dotted) per step,
    one line per named `short_runs.ShortRun`."""
    from gpt2lab.base import figures

    fig, axes = figures.subplots(1, 2, height=3)
    for name, r in runs.items():
        axes[0].plot(r.loss, label=name)
        axes[1].plot(r.grad_norm, label=name)
    axes[0].set(xlabel="step", ylabel="train loss", title=title)
    axes[1].set(xlabel="step", ylabel="gradient norm (before clipping)", yscale="log")
    axes[1].axhline(1.0, color="grey", ls=":", lw=1)
    axes[0].legend()
    return fig
