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
# (so round numbers: "about 1000 ms", "about 333 ms", ...). Same rung names as gpt2lab.knobs.RUNGS.
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
