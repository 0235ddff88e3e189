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
# (so round numbers: "about 1000 ms", "about 333 ms", ...). Rung names are a subset of gpt2lab.engine.knobs.RUNGS.
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


@dataclass(frozen=True)
class Cited:
    """One published figure: its value, what it measures, where it comes from, and whether it was read off
    a plot (approximate) rather than printed as a number."""

    value: float
    what: str
    source: str
    approximate: bool = False

    def describe(self) -> str:
        how = "approximately, read from the video's plot" if self.approximate else "as printed"
        return f"{self.what}: {'~' if self.approximate else ''}{self.value:g} ({how}; {self.source})"


_BUILD_NANOGPT_PLAY = ("karpathy/build-nanogpt, play.ipynb @136b65e (the notebook that plots the video's final "
                       "runs; its baseline lines)")
_VIDEO = 'Karpathy, "Let\'s reproduce GPT-2 (124M)", YouTube, June 2024, final section (results of the full runs)'

# What the finished runs are measured against and what they reached. Exact figures where a file prints them;
# the run's own end points were only shown as curves, so they are marked approximate.
FULL_RUN = {
    "gpt2_val_loss": Cited(3.2924, "OpenAI GPT-2 124M checkpoint, validation loss on FineWeb-Edu val",
                           _BUILD_NANOGPT_PLAY),
    "gpt2_hellaswag": Cited(0.2955, "OpenAI GPT-2 124M, HellaSwag acc_norm (completion style, all 10,042)",
                            "karpathy/build-nanogpt hellaswag.py, notes at the top; the video"),
    "gpt3_hellaswag": Cited(0.337, "GPT-3 Small (125M), HellaSwag zero-shot",
                            "Brown et al. 2020, arXiv:2005.14165, Table H.1"),
    "run10b_hellaswag": Cited(0.30, "the video's 10B-token run, HellaSwag acc_norm at the end", _VIDEO,
                              approximate=True),
    "run40b_hellaswag": Cited(0.33, "the video's 40B-token run (4 epochs of the 10B sample), HellaSwag at the end",
                              _VIDEO, approximate=True),
}

# Measured by this project on an NVIDIA H200 (main @8b3a875, 2026-11-26; /work/shared/measurements/
# h200-2026-11-26/README.md, ladder.jsonl, hellaswag.json). Hardware-specific: cited, not re-measured here.
H200_MEASURED = {
    "step_ms_b64": Cited(124.9, "GPT-2 124M, vocab 50304, B=64 T=1024, TF32+bf16+flash+fused AdamW, compiled: "
                                "ms per micro-batch step (median of 15)", "this project, H200 2026-11-26"),
    "peak_mib_b16_fused": Cited(11_790, "the same settings at B=16: peak CUDA memory allocated, MiB",
                                "this project, H200 2026-11-26, ladder.jsonl rung fused_adamw"),
    "hellaswag_s": Cited(30, "all 10,042 HellaSwag examples scored, model load included, batch 32: "
                             "under this many seconds", "this project, H200 2026-11-26, hellaswag.json"),
}
