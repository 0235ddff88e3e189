"""How big the book's experiments are: picked from the hardware, or forced with GPT2LAB_SCALE.

- gpu:   a CUDA device is present: GPT-2 124M, the video's batch shapes.
- cpu:   no GPU: small models that finish in minutes on a 2-core laptop.
- smoke: seconds per notebook; what `make test` uses to check that every notebook runs.

Every notebook prints the scale it ran at and why, so a reader knows what their numbers mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

ENV = "GPT2LAB_SCALE"


@dataclass(frozen=True)
class Scale:
    name: str
    device: str
    train_preset: str  # a gpt2lab.run.config preset for the first real training run
    train_overrides: dict = field(default_factory=dict)
    bench_preset: str = "gpt2"  # a model shape (gpt2lab.engine.model.SHAPES) for the speed ladder
    bench_batch: int = 16
    bench_seq: int = 1024
    bench_steps: int = 10
    bench_warmup: int = 3
    hellaswag_limit: int | None = None  # None: all 10,042 validation examples
    reason: str = ""

    def describe(self) -> str:
        return f"scale '{self.name}' on {self.device} ({self.reason})"


SCALES = {
    "gpu": Scale("gpu", "cuda", train_preset="gpu-tiny-shakespeare", bench_preset="gpt2", bench_batch=16,
                 bench_seq=1024, bench_steps=20, bench_warmup=5, hellaswag_limit=None),
    "cpu": Scale("cpu", "cpu", train_preset="cpu-tiny-shakespeare", bench_preset="cpu-small", bench_batch=4,
                 bench_seq=128, bench_steps=10, bench_warmup=1, hellaswag_limit=500),
    "smoke": Scale("smoke", "cpu", train_preset="smoke", bench_preset="cpu-tiny", bench_batch=2,
                   bench_seq=32, bench_steps=2, bench_warmup=1, hellaswag_limit=24),
}


def pick_scale(env: dict | None = None) -> Scale:
    env = os.environ if env is None else env
    forced = env.get(ENV, "").strip()
    if forced:
        if forced not in SCALES:
            raise ValueError(f"{ENV}={forced!r} is not a scale; choose one of {', '.join(SCALES)}")
        scale, reason = SCALES[forced], f"set by {ENV}"
    elif torch.cuda.is_available():
        scale, reason = SCALES["gpu"], f"found {torch.cuda.get_device_name(0)}"
    else:
        scale, reason = SCALES["cpu"], "no CUDA device found"
    if scale.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"scale {scale.name!r} needs a CUDA device and none was found")
    overrides = dict(scale.train_overrides)
    if scale.name == "cpu" and _cpu_lacks_bf16():  # the cpu preset trains in bf16 where the CPU has bf16 units
        overrides["autocast"] = "none"
        reason += "; no bf16 instructions, so training in fp32"
    return Scale(**{**scale.__dict__, "reason": reason, "train_overrides": overrides})


def _cpu_lacks_bf16() -> bool:
    from gpt2lab.base.hardware import cpu_bf16_native

    return not cpu_bf16_native()
