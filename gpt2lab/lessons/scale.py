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


# Chapter 3's run at cpu scale: the preset's steps where they fit in about this many seconds of training, else as
# many as do. 2-core CPUs differ by 3-4x at this preset (about 9,500 tokens/s on an AMD EPYC with avx512_bf16,
# 2,700 on a Xeon without AMX), and the whole book should build in minutes on either (on a 2-core EPYC
# the preset's 1,600 steps measured 122 ms each: 3.3 minutes, over a quarter of the book's 12-minute build).
RUN_BUDGET_S = 75.0
LEAST_STEPS = 450  # fewer, with the schedule compressed, and the loss is still in its first fall: at 200 steps it had
# not beaten the unigram baseline by the chapter's 0.3 (2-core EPYC, 2026-12-02); 473 and 512 steps had


def seconds_per_step(cfg, steps: int = 3) -> float:
    """Median seconds of one training step of `cfg` (its model, batch, speed knobs) on random tokens, after one
    step of warm-up: what the run will take per step on this machine, measured in a few seconds."""
    from gpt2lab.base.timing import measure
    from gpt2lab.engine.knobs import build, keep_freed_memory
    from gpt2lab.engine.step import train_step
    from gpt2lab.run.train import model_config, run_knobs

    device = torch.device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does
    built = build(run_knobs(cfg, device), model_config(cfg), device, cfg.optim(), seed=cfg.seed)
    g = torch.Generator().manual_seed(0)
    vocab = built.raw.config.vocab_size
    batch = [torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len), generator=g).to(device) for _ in range(2)]
    step = lambda: float(train_step(built, lambda: tuple(batch), grad_accum=cfg.grad_accum(1)).loss)  # noqa: E731
    return measure(step, device, steps=steps, warmup=1).median_ms / 1000


def fit_to_budget(cfg, per_step_s: float, budget_s: float = RUN_BUDGET_S, least: int = LEAST_STEPS):
    """`cfg` with as many of its steps as fit in `budget_s` at `per_step_s` (at least `least`, at most its own),
    its schedule compressed to them (warm-up kept) and its evaluations, log lines and checkpoint spaced alike."""
    from dataclasses import replace

    steps = max(min(cfg.max_steps, int(budget_s / per_step_s)), min(least, cfg.max_steps))
    if steps == cfg.max_steps:
        return cfg
    every = max(1, round(cfg.val_every * steps / cfg.max_steps)) if cfg.val_every else 0
    return replace(cfg, max_steps=steps, val_every=every, log_every=max(1, every),
                   sample_every=steps if cfg.sample_every else 0, checkpoint_every=steps)
