"""Figures the book shows, built from run logs and configs (so a notebook only calls them)."""

from __future__ import annotations

from gpt2lab.config import TrainConfig
from gpt2lab.optim import lr_at
from gpt2lab.train import read_log


def plot_schedule(configs: dict[str, TrainConfig]):
    """Learning rate against step, one panel per named config."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(configs), figsize=(4.5 * len(configs), 3), squeeze=False)
    for ax, (name, cfg) in zip(axes[0], configs.items()):
        steps = range(0, cfg.max_steps + 1, max(1, cfg.max_steps // 500))
        ax.plot(list(steps), [lr_at(s, cfg.optim()) for s in steps])
        ax.axvline(cfg.warmup_steps, color="grey", ls=":", lw=1)
        ax.set(title=name, xlabel="step", ylabel="learning rate")
    fig.tight_layout()
    return fig


def plot_losses(out_dir, baseline: float | None = None, title: str = "training run"):
    """Train loss per step, val loss at its evaluations, and an optional horizontal baseline."""
    import matplotlib.pyplot as plt

    train, val = read_log(out_dir, "train"), read_log(out_dir, "val")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, alpha=0.7, label="train loss")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    if baseline is not None:
        ax.axhline(baseline, color="red", ls="--", lw=1, label=f"unigram baseline {baseline:.2f}")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig
