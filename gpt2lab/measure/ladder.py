"""Time the optimization ladder on this hardware: the video's "timing each optimization", reproducible.

For each rung of `gpt2lab.engine.knobs.RUNGS` the harness builds model and optimizer from the rung's knobs, runs
warm-up steps of the real training step (`gpt2lab.engine.step.train_step`; torch.compile compiles here, so that
time is reported apart), then times N steps with `gpt2lab.base.timing.measure`. It reports median and spread of
ms/step, tokens/s, MFU, the rung's own peak memory and the hardware, and checks that the rung still computes
the same thing: every rung starts from the same weights and trains on the same batch, so its loss after the
same number of steps must match the fp32 rung's within the rung's guard. A fast but wrong rung fails loudly.
"""

from __future__ import annotations

import functools
import gc
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from gpt2lab.measure.flops import flops_per_token, mfu
from gpt2lab.base.hardware import best_peak_flops, hardware_record, peak_flops
from gpt2lab.engine.knobs import RUNGS, VIDEO_RUNGS, Knobs, Rung, build, get_rung, keep_freed_memory, matmul_precision, unsupported_reason
from gpt2lab.engine.model import GPT, GPTConfig, get_config
from gpt2lab.engine.step import train_step
from gpt2lab.base.timing import load_average, measure, peak_memory, tensor_step_mb

DEFAULT_SEED = 1337
NOISY_SPREAD = 0.5  # (max - min) / median above this: the rung's steps disagree too much to trust a verdict


@dataclass
class RungResult:
    """One rung of one ladder run; one JSON line in the results file."""

    rung: str
    knobs: dict
    config: dict  # the model shape (unpadded vocabulary; attention and padding come from the knobs)
    preset: str | None
    batch: int
    seq: int
    steps: int
    warmup: int
    device: str
    hardware: dict
    started: str  # when the ladder run began (UTC, ISO 8601): groups the lines of one run
    skipped: str | None = None  # why this hardware could not run the rung
    step_ms: list[float] = field(default_factory=list)  # every timed step
    ms_median: float | None = None
    ms_min: float | None = None
    ms_max: float | None = None
    tokens_per_s: float | None = None
    speedup: float | None = None  # over the fp32 rung of the same run
    flops_per_token: float | None = None
    peak_tflops: float | None = None  # the peak of the rung's own matmul dtype, which `mfu` is relative to
    mfu: float | None = None
    best_peak_tflops: float | None = None  # the device's best dense 16-bit peak: one yardstick for every rung
    mfu_best: float | None = None
    first_step_s: float | None = None  # the first warm-up step: includes torch.compile's compilation
    warmup_s: float | None = None  # all warm-up steps
    peak_mem_mb: float | None = None  # this rung's peak over its timed steps (not the process's since start)
    step_mem_mb: float | None = None  # tensors a step adds on top of model, optimizer state and inputs
    mem_kind: str | None = None
    load_avg: float | None = None  # 1-min system load after timing: above the core count, others shared the CPU
    loss: float | None = None  # the last timed step's loss
    ref_loss: float | None = None  # the fp32 rung's, same batch, same weights, same number of steps
    guard_ok: bool | None = None  # None: nothing to compare against
    guard: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RungResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the timed steps."""
        return None if self.ms_median is None else (self.ms_max - self.ms_min) / self.ms_median

    @property
    def noisy(self) -> bool:
        return self.spread is not None and self.spread > NOISY_SPREAD


def append_jsonl(path: str | os.PathLike, results: list[RungResult]) -> None:
    """Append one JSON line per rung, so repeated runs (and other machines) accumulate in one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")


def load_jsonl(path: str | os.PathLike) -> list[RungResult]:
    """Every rung of every run in a results file; `runs()` groups them."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    results = [RungResult.from_dict(json.loads(line)) for line in lines if line.strip()]
    for r in results:  # files written before the one-yardstick MFU column: derive it from what they recorded
        if r.mfu_best is None and r.tokens_per_s and r.flops_per_token and r.hardware.get("device") == "cuda":
            best = best_peak_flops(r.hardware["device_name"])
            if best:
                r.best_peak_tflops, r.mfu_best = best / 1e12, mfu(r.tokens_per_s, r.flops_per_token, best)
    return results


def runs(results: list[RungResult]) -> list[list[RungResult]]:
    """The ladder runs in a results file, in file order (a run is the lines sharing `started`)."""
    grouped: dict[str, list[RungResult]] = {}
    for r in results:
        grouped.setdefault(r.started, []).append(r)
    return list(grouped.values())


def loss_guard(loss: float, ref_loss: float | None, atol: float = 0.02, rtol: float = 0.02) -> tuple[bool | None, str]:
    """Is this rung's loss finite and within atol + rtol * |fp32 loss| of the fp32 rung's? (ok, explanation)"""
    if not math.isfinite(loss):
        return False, f"FAIL: loss is {loss}"
    if ref_loss is None:
        return None, "no fp32 reference"
    diff, tol = abs(loss - ref_loss), atol + rtol * abs(ref_loss)
    if diff > tol:
        return False, f"FAIL: loss {loss:.4f} vs fp32 {ref_loss:.4f}, off by {diff:.3g} > {tol:.3g}"
    return True, "bit-identical to fp32" if diff == 0 else f"|dloss| {diff:.1e} <= {tol:.2f}"


def compare(before: RungResult, after: RungResult) -> tuple[float, str]:
    """Speed-up of `after` over `before` (ratio of median times per token, which is the ratio of ms/step when
    both ran the same batch) and an honest verdict: "faster" or "slower" only when the two rungs' min-max
    ranges of time per token do not overlap, else "within noise"."""
    b, a = before.batch * before.seq, after.batch * after.seq
    ratio = (before.ms_median / b) / (after.ms_median / a)
    if after.ms_max / a < before.ms_min / b:
        return ratio, "faster"
    if after.ms_min / a > before.ms_max / b:
        return ratio, "slower"
    return ratio, "within noise"


# ------------------------------------------------------------------------------------------------ the run


def resolve_rungs(rungs) -> list[Rung]:
    """'all', 'video' (the video's rungs only), a comma-separated string of rung names, or a list of names, Rungs
    and (name, Knobs) pairs."""
    if isinstance(rungs, str):
        named = {"all": list(RUNGS), "video": list(VIDEO_RUNGS)}
        rungs = named.get(rungs.strip()) or [r.strip() for r in rungs.split(",") if r.strip()]
    resolved = []
    for r in rungs:
        if isinstance(r, tuple):  # an experiment: knobs that are not on the ladder
            name, knobs = r
            r = Rung(name, knobs, change="(custom knobs)", why="", chapter=0)
        resolved.append(r if isinstance(r, Rung) else get_rung(r))
    names = [r.name for r in resolved]
    if not names:
        raise ValueError("no rungs given")
    if len(set(names)) != len(names):
        raise ValueError(f"rung listed twice: {', '.join(names)}")
    return resolved


def check_settings(config: GPTConfig, batch: int, seq: int, steps: int, warmup: int, peak_tflops=None) -> None:
    """ValueError with one clear line for settings the ladder cannot run with."""
    for name, value in (("batch", batch), ("seq", seq), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if seq > config.block_size:
        raise ValueError(f"seq {seq} exceeds the model's block_size {config.block_size}")
    if peak_tflops is not None and not (peak_tflops > 0 and math.isfinite(peak_tflops)):
        raise ValueError(f"peak TFLOP/s must be positive, got {peak_tflops}")


@functools.lru_cache(maxsize=1)
def _shakespeare_tokens() -> tuple[int, ...]:
    from gpt2lab.engine.corpus import load_text
    from gpt2lab.engine.tokenizer import encode

    return tuple(encode(load_text()))


def fixed_batch(config: GPTConfig, batch: int, seq: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch*seq+1 tokens of Tiny Shakespeare as (inputs, next-token targets), for every rung alike.

    Real text rather than random ids, so the loss falls quickly and the guard has a signal to compare.
    Toy vocabularies smaller than GPT-2's see the token ids folded into their range.
    """
    tokens = _shakespeare_tokens()
    n = batch * seq + 1
    buf = torch.tensor((tokens * -(-n // len(tokens)))[:n], dtype=torch.long) % config.vocab_size
    return buf[:-1].view(batch, seq).to(device), buf[1:].view(batch, seq).to(device)


def initial_weights(config: GPTConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return GPT(config).state_dict()


@torch.no_grad()
def load_initial_weights(model: GPT, weights: dict[str, torch.Tensor]) -> None:
    """Start every rung from the same weights, so the guard compares arithmetic, not initializations.

    (With the same seed alone, the padded vocabulary would draw 47 more embedding rows and shift every later
    random draw.) A padded embedding keeps its extra rows: no input or target ever uses them.
    """
    for name, dst in model.state_dict().items():
        src = weights[name]
        dst[: src.size(0)].copy_(src)


def free_memory(device: torch.device) -> None:
    """Drop compiled graphs (and their references to the last rung's model) and cached blocks."""
    torch.compiler.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_rung(rung: Rung | Knobs, config: GPTConfig, batch_xy, steps: int, warmup: int, device: torch.device,
              weights: dict | None = None, seed: int = DEFAULT_SEED, on_step=None, micro: int | None = None) -> dict:
    """Build the rung's model and optimizer, warm up, time `steps` real training steps, measure the peak memory
    of the timed steps. Returns the raw measurements (a dict of RungResult fields).

    `micro`: run each step as gradient accumulation over micro-batches of this many rows (the same gradient and
    loss as the whole batch, up to rounding, in less memory): how an fp32 reference is computed at a big batch."""
    knobs = rung.knobs if isinstance(rung, Rung) else rung
    rows = batch_xy[0].size(0)
    micro = rows if micro is None or rows % micro else micro
    pieces = list(zip(batch_xy[0].split(micro), batch_xy[1].split(micro)))
    cycle = itertools.cycle(pieces)
    with matmul_precision(knobs):  # process-global: set for this rung only
        built = build(knobs, config, device, seed=seed)
        if weights is not None:
            load_initial_weights(built.raw, weights)
        # the same batch every step: time compute, not loading
        step = functools.partial(train_step, built, lambda: next(cycle), grad_accum=len(pieces))
        try:
            # warm up outside the memory probe (compilation is not a step's memory), timed: the first warm-up
            # step includes torch.compile's compilation
            warm = measure(step, device, steps=warmup, warmup=0, on_call=on_step) if warmup else None
            with peak_memory(device) as mem:
                m = measure(step, device, steps=steps, warmup=0, on_call=on_step)
            # on a CPU the resident size is malloc's high-water mark; one more, untimed step counts tensors
            counted = tensor_step_mb(step, device) if device.type != "cuda" else None
            step_mb = mem.step_mb if counted is None else counted
            return dict(step_ms=m.times_ms, peak_mem_mb=mem.peak_mb, step_mem_mb=step_mb, mem_kind=mem.kind,
                        load_avg=load_average(), loss=m.last.loss.item(),
                        first_step_s=warm.times_ms[0] / 1000 if warm else None,
                        warmup_s=sum(warm.times_ms) / 1000 if warm else None)
        finally:
            del built, step
            free_memory(device)


def run_ladder(
    rungs,
    config: GPTConfig | str,
    batch: int,
    seq: int,
    steps: int,
    warmup: int,
    device: torch.device | str,
    peak_tflops: float | None = None,
    progress: bool = True,
    seed: int = DEFAULT_SEED,
    reference_batch: int | None = None,
) -> list[RungResult]:
    """Time each rung on `device`; one RungResult per rung, in order, skipped rungs included with the reason.

    `rungs`: 'all', 'fp32,bf16', or a list of rung names, Rungs and (name, Knobs) pairs. `config`: a GPTConfig
    or a preset name. `batch` is the micro-batch of every rung that has none of its own (`Rung.batch`, e.g.
    batch64). MFU uses `peak_tflops` if given, else the device's datasheet peak for the rung's dtype (known GPUs
    only). Each rung's guard compares it with fp32 at the rung's own batch: where fp32 is not among the rungs at
    that batch it is run once, untimed, as the reference; at a batch larger than `reference_batch` (default:
    `batch`) and a multiple of it, as gradient accumulation over micro-batches of that many rows, which computes
    the same loss and gradient in the memory fp32 needs at that size (fp32 with naive attention at B=64, T=1024
    would need over 100 GB; `benchmarks/bench_past_the_video.py` passes 16).
    """
    from tqdm.auto import tqdm

    preset = config if isinstance(config, str) else None
    config = get_config(config) if isinstance(config, str) else config
    device = torch.device(device)
    ladder = resolve_rungs(rungs)
    check_settings(config, batch, seq, steps, warmup, peak_tflops)
    for b in [r.batch for r in ladder if r.batch is not None] + [reference_batch or 1]:
        check_settings(config, b, seq, steps, warmup)

    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does: big freed tensors stay in the heap
    hardware = hardware_record(device)
    batches = {b: fixed_batch(config, b, seq, device) for b in dict.fromkeys(r.batch or batch for r in ladder)}
    weights = initial_weights(config, seed)
    fpt = flops_per_token(config, seq)
    common = dict(
        # attention and loss are knobs, not the shape
        config={k: v for k, v in asdict(config).items() if k not in ("attn", "loss")},
        preset=preset, seq=seq, steps=steps, warmup=warmup,
        device=str(device), hardware=hardware, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    def run(rung, batch_xy, bar, micro=None):
        return time_rung(rung, config, batch_xy, steps, warmup, device, weights, seed, on_step=bar.update, micro=micro)

    results = []
    with tqdm(total=len(ladder) * (warmup + steps), unit="step", disable=not progress) as bar:
        for rung in ladder:
            bar.set_description(rung.name)
            b = rung.batch or batch
            r = RungResult(rung=rung.name, knobs=asdict(rung.knobs), batch=b, **common)
            r.skipped = unsupported_reason(rung.knobs, device)
            if r.skipped is None:
                try:
                    measured = run(rung, batch_xy=batches[b], bar=bar)
                except torch.OutOfMemoryError:
                    free_memory(device)
                    r.skipped = f"out of memory at batch {b} x seq {seq}: try a smaller --batch-size"
                else:
                    for k, v in measured.items():
                        setattr(r, k, v)
                    _summarize(r, fpt, peak_tflops)
            if r.skipped is not None:
                bar.update(warmup + steps)
            results.append(r)

        base = next((r for r in results if r.rung == "fp32" and r.batch == batch and r.skipped is None), None)
        ref_loss = {r.batch: r.loss for r in results if r.rung == "fp32" and r.skipped is None}
        for b in batches:
            if b in ref_loss or all(r.skipped is not None for r in results if r.batch == b):
                continue
            ref_micro = reference_batch or batch
            micro = ref_micro if b > ref_micro and b % ref_micro == 0 else None
            bar.set_description(f"fp32 reference at batch {b} (untimed)")
            bar.total += warmup + steps
            try:
                ref_loss[b] = run(RUNGS["fp32"], batch_xy=batches[b], bar=bar, micro=micro)["loss"]
            except torch.OutOfMemoryError:
                free_memory(device)
    for rung, r in zip(ladder, results):
        if r.skipped is None:
            r.ref_loss = ref_loss.get(r.batch)
            r.guard_ok, r.guard = loss_guard(r.loss, r.ref_loss, rung.guard_atol, rung.guard_rtol)
            if base is not None and base.tokens_per_s:
                r.speedup = r.tokens_per_s / base.tokens_per_s  # per token: rungs may differ in batch
    return results


def _summarize(r: RungResult, fpt: float, peak_tflops: float | None) -> None:
    import statistics

    r.ms_median = statistics.median(r.step_ms)
    r.ms_min, r.ms_max = min(r.step_ms), max(r.step_ms)
    r.tokens_per_s = r.batch * r.seq / (r.ms_median / 1000)
    r.flops_per_token = fpt
    name = r.hardware["device_name"]
    on_gpu = r.hardware["device"] == "cuda"
    peak = peak_tflops * 1e12 if peak_tflops is not None else (
        peak_flops(name, Knobs(**r.knobs).matmul_dtype) if on_gpu else None)
    best = peak_tflops * 1e12 if peak_tflops is not None else (best_peak_flops(name) if on_gpu else None)
    if peak:
        r.peak_tflops, r.mfu = peak / 1e12, mfu(r.tokens_per_s, fpt, peak)
    if best:
        r.best_peak_tflops, r.mfu_best = best / 1e12, mfu(r.tokens_per_s, fpt, best)



def previous_rung(name: str) -> str:
    """The rung before `name` on the ladder: what `name` is timed against."""
    names = list(RUNGS)
    i = names.index(get_rung(name).name)
    if i == 0:
        raise ValueError(f"{name} is the first rung; it has no previous one")
    return names[i - 1]


def time_against_previous(name: str, scale, progress: bool = False) -> list[RungResult]:
    """The rung before `name` and `name` itself, timed in one run at a `gpt2lab.lessons.scale.Scale`'s ladder settings.

    What every rung chapter measures: one change, on this machine, with the trainer's real training step."""
    return run_ladder([previous_rung(name), name], scale.bench_preset, scale.bench_batch, scale.bench_seq,
                      scale.bench_steps, scale.bench_warmup, scale.device, progress=progress)
