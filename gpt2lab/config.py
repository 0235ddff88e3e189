"""Training run configuration and named presets.

A preset is a complete TrainConfig; command-line flags override single fields
(`python -m gpt2lab train --preset cpu-tiny-shakespeare --max-steps 50`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Optional, Union, get_args, get_origin, get_type_hints

from gpt2lab.errors import UserError
from gpt2lab.optim import OptimConfig


@dataclass(frozen=True)
class TrainConfig:
    # model and data
    model: str = "gpt2"  # a gpt2lab.model preset
    data: str = "data/edu_fineweb10B"  # prepared shard folder, or a packaged corpus name (prepared on first use)
    shard_size: int = 100_000_000  # only used when `data` is a corpus name that gets prepared automatically
    # batch: total_batch tokens per optimizer step = batch_size * seq_len * world_size * grad_accum
    batch_size: int = 64
    seq_len: int = 1024
    total_batch: int = 524_288  # 2**19, ~0.5M tokens as in GPT-3 Small
    # optimization (GPT-3 paper hyper-parameters, as in the video)
    max_steps: int = 19_073  # 10B tokens / 524,288 tokens per step
    warmup_steps: int = 715  # 375M warmup tokens / 524,288
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # speed knobs: a ladder rung, with optional single-knob overrides
    rung: str = "fused_adamw"
    compile: Optional[bool] = None
    autocast: Optional[str] = None
    device: str = "auto"
    seed: int = 1337
    # evaluation and bookkeeping
    log_every: int = 1  # console line every N steps (the JSONL log gets every step)
    val_every: int = 250
    val_steps: int = 20
    hellaswag_every: int = 250  # 0 disables
    hellaswag_limit: Optional[int] = None  # score only the first N examples
    hellaswag_data: Optional[str] = None  # local hellaswag_val.jsonl (else GPT2LAB_HELLASWAG or download)
    sample_every: int = 250  # 0 disables
    sample_prompt: str = "Hello, I'm a language model,"
    sample_tokens: int = 32
    checkpoint_every: int = 5000
    stop_after: Optional[int] = None  # pause after this many steps; the schedule still targets max_steps

    def optim(self) -> OptimConfig:
        return OptimConfig(max_lr=self.max_lr, min_lr_ratio=self.min_lr_ratio, warmup_steps=self.warmup_steps,
                           max_steps=self.max_steps, weight_decay=self.weight_decay, grad_clip=self.grad_clip)

    def validate(self) -> None:
        positive = ["batch_size", "seq_len", "total_batch", "max_steps", "val_steps", "log_every", "shard_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        non_negative = ["warmup_steps", "val_every", "hellaswag_every", "sample_every", "checkpoint_every", "sample_tokens"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"need max_lr > 0 and 0 <= min_lr_ratio <= 1, got {self.max_lr}, {self.min_lr_ratio}")
        if self.stop_after is not None and self.stop_after < 1:
            raise UserError(f"stop_after must be positive, got {self.stop_after}")

    def grad_accum(self, world_size: int) -> int:
        per_step = self.batch_size * self.seq_len * world_size
        if self.total_batch % per_step:
            raise UserError(
                f"total_batch {self.total_batch} is not divisible by batch_size*seq_len*world_size = "
                f"{self.batch_size}*{self.seq_len}*{world_size} = {per_step}"
            )
        return self.total_batch // per_step


PRESETS: dict[str, TrainConfig] = {
    # The video's run: GPT-2 124M on 10B tokens of FineWeb-Edu, one epoch.
    "gpt2-124m-fineweb10b": TrainConfig(),
    # Minutes on a 2-core laptop: a 4-layer, 128-wide GPT on Tiny Shakespeare (~300k train tokens), 400 steps of
    # 1,024 tokens (~1.4 epochs). Small batches and a high peak rate: at this size more updates per token learn
    # faster, and most of the final drop comes as the cosine anneals. bf16 autocast (CPUs with bf16
    # instructions run it faster than fp32; the book's cpu scale turns it off on CPUs without).
    "cpu-tiny-shakespeare": TrainConfig(
        model="cpu-shakespeare", data="tinyshakespeare", shard_size=33_800, batch_size=8, seq_len=128,
        total_batch=1024, max_steps=400, warmup_steps=20, max_lr=6e-3, rung="fused_adamw", compile=False,
        autocast="bf16", device="cpu", log_every=50, val_every=50, val_steps=8, hellaswag_every=0,
        sample_every=200, sample_prompt="ROMEO:", checkpoint_every=200,
    ),
    # The video's first debugging runs: GPT-2 124M on Tiny Shakespeare, B=16, T=1024, all GPU speed-ups on.
    "gpu-tiny-shakespeare": TrainConfig(
        model="gpt2", data="tinyshakespeare", shard_size=33_800, batch_size=16, seq_len=1024,
        total_batch=16_384, max_steps=100, warmup_steps=10, max_lr=6e-4, device="cuda", log_every=10,
        val_every=25, val_steps=2, hellaswag_every=0, sample_every=50, checkpoint_every=100,
    ),
    # Seconds: exercises every code path in tests and in the notebooks' smoke scale.
    "smoke": TrainConfig(
        model="cpu-tiny", data="tinyshakespeare", shard_size=33_800, batch_size=4, seq_len=64,
        total_batch=512, max_steps=8, warmup_steps=2, max_lr=1e-3, compile=False, autocast="none",
        device="cpu", log_every=1, val_every=4, val_steps=2, hellaswag_every=0, sample_every=4,
        sample_tokens=8, checkpoint_every=4,
    ),
}


def get_preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    cfg = replace(PRESETS[name], **overrides)
    cfg.validate()
    return cfg


def field_types() -> dict[str, type]:
    """Each field's base type (Optional[int] -> int), for building command-line flags."""
    out = {}
    for name, hint in get_type_hints(TrainConfig).items():
        if get_origin(hint) is Union:
            hint = next(a for a in get_args(hint) if a is not type(None))
        out[name] = hint
    return out
