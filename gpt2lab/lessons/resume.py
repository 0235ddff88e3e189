"""Interrupted and resumed, checked bit for bit: the same run with and without a break, through the command line.

Each training runs as a user would run it, `python -m gpt2lab train ...` in a fresh process: the straight run to
`steps`, then the same flags with `--stop-after steps // 2`, then a plain `--resume` that takes every other
setting from the checkpoint. A fresh process matters on a GPU, where cuBLAS reads its workspace setting (part of
`--deterministic true`) once, when the CUDA runtime starts.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2lab.run.train import read_log


def train_cli(out_dir: str | Path, *flags: str) -> None:
    """`python -m gpt2lab train --out-dir OUT --no-progress FLAGS` in a fresh process; raises with the end of its
    stderr if it fails."""
    proc = subprocess.run([sys.executable, "-m", "gpt2lab", "train", "--out-dir", str(out_dir), "--no-progress",
                           *flags], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training in {out_dir} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")


@dataclass
class ResumeCheck:
    """The per-step train records of a run without a break and of the same run stopped half-way and resumed."""

    label: str
    straight: list[dict]
    resumed: list[dict]

    @property
    def losses_identical(self) -> bool:
        return [r["loss"] for r in self.straight] == [r["loss"] for r in self.resumed]

    @property
    def largest_difference(self) -> float:
        return max(abs(a["loss"] - b["loss"]) for a, b in zip(self.straight, self.resumed))

    @property
    def schedule_identical(self) -> bool:
        return [r["lr"] for r in self.straight] == [r["lr"] for r in self.resumed]

    def summary(self) -> str:
        return (f"{self.label}: {len(self.resumed)} steps, losses identical: {self.losses_identical}, largest "
                f"difference {self.largest_difference:.3g}, last loss {self.resumed[-1]['loss']:.4f}")


def straight_and_resumed(work: str | Path, name: str, preset: str, steps: int, deterministic: bool,
                         extra: tuple[str, ...] = ()) -> ResumeCheck:
    """Train `preset` for `steps` steps in WORK/NAME-straight, and again in WORK/NAME-resumed stopped after
    steps // 2 and resumed with a plain `--resume`; no validation, sampling or periodic checkpoints."""
    flags = ["--preset", preset, "--max-steps", str(steps), "--val-every", "0", "--sample-every", "0",
             "--checkpoint-every", "0", "--log-every", "1000000", "--deterministic", str(deterministic), *extra]
    straight, resumed = Path(work) / f"{name}-straight", Path(work) / f"{name}-resumed"
    train_cli(straight, *flags)
    train_cli(resumed, *flags, "--stop-after", str(steps // 2))
    train_cli(resumed, "--resume")  # everything else comes from the checkpoint
    return ResumeCheck(f"deterministic={deterministic}", read_log(straight), read_log(resumed))


def median_ms_per_step(records: list[dict], warmup: int = 5) -> float:
    """Median step time of a run's train records, skipping the first `warmup` steps (compilation, warm caches)."""
    if len(records) <= warmup:
        raise ValueError(f"need more than {warmup} steps to skip the warm-up, got {len(records)}")
    return statistics.median(r["ms"] for r in records[warmup:])
