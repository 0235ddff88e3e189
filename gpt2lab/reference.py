"""Published numbers we compare our own measurements against, each with its source.

Kept as data, not code paths: the benchmark never needs them to run, the plots and the book cite them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LadderReference:
    """ms per optimizer step for each rung of the ladder, measured by someone else on known hardware."""

    label: str
    source: str
    gpu: str
    model: str
    batch: int
    seq: int
    ms_per_step: dict[str, float]  # rung name -> ms/step

    def tokens_per_s(self, rung: str) -> float:
        return self.batch * self.seq / (self.ms_per_step[rung] / 1000)

    def speedup(self, rung: str, baseline: str = "fp32") -> float:
        return self.ms_per_step[baseline] / self.ms_per_step[rung]


# The ladder as timed in the video, one GPU, read off the training log printed on screen after each change
# (so round numbers: "about 1000 ms", "about 333 ms", ...). Rung names are a subset of gpt2lab.knobs.RUNGS.
VIDEO_A100_LADDER = LadderReference(
    label="video: A100, GPT-2 124M, B=16 T=1024",
    source=(
        'Andrej Karpathy, "Let\'s reproduce GPT-2 (124M)", YouTube, June 2024 '
        "(https://www.youtube.com/watch?v=l8pRSuU81PU), code at https://github.com/karpathy/build-nanogpt"
    ),
    gpu="NVIDIA A100 80GB SXM",
    model="gpt2 (124M)",
    batch=16,
    seq=1024,
    ms_per_step={
        "fp32": 1000,
        "tf32": 333,
        "bf16": 300,
        "compile": 130,
        "flash": 96,
        "vocab50304": 93,
        "fused_adamw": 90,
    },
)


# This project's own measurement, committed with its hardware record in results/h200-2026-11-26/ (ladder.jsonl,
# README.md): `python -m gpt2lab bench --rungs all --batch 16 --seq 1024 --steps 15 --warmup 3` on one NVIDIA H200
# (torch 2.11.0+cu130), 2026-11-26; medians of 15 timed steps. A test keeps these equal to the committed file.
PROJECT_H200_LADDER = LadderReference(
    label="gpt2lab: H200, GPT-2 124M, B=16 T=1024",
    source="gpt2lab's own run, results/h200-2026-11-26/ladder.jsonl (NVIDIA H200, torch 2.11.0+cu130, 2026-11-26)",
    gpu="NVIDIA H200",
    model="gpt2 (124M)",
    batch=16,
    seq=1024,
    ms_per_step={
        "fp32": 369.18,
        "tf32": 157.92,
        "bf16": 143.35,
        "compile": 52.54,
        "flash": 40.42,
        "vocab50304": 38.10,
        "fused_adamw": 34.75,
    },
)
LADDER_REFERENCES = (VIDEO_A100_LADDER, PROJECT_H200_LADDER)
