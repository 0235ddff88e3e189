"""Time the optimization ladder on this hardware: the video's "timing each optimization", reproducible.

For each rung of `gpt2lab.engine.knobs.RUNGS` the harness builds model and optimizer from the rung's knobs, runs
warm-up steps of the real training step (`gpt2lab.engine.step.train_step`; torch.compile compiles here, so that
time is reported apart), then times N steps with `gpt2lab.base.timing.measure`. It reports median and spread of
ms/step, tokens/s, MFU, the rung's own peak memory and the hardware, and checks that the rung still computes
the same thing: every rung starts from the same weights and trains on the same batch, so its loss after the
same number of steps must match the fp32 rung's within the rung's guard. A fast but wrong rung fails loudly.

This module runs the ladder; what a run produces (`RungResult`), how it is stored and judged is
`gpt2lab.measure.records`.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import torch

from gpt2lab.base.hardware import hardware_record
from gpt2lab.base.timing import load_average, measure, peak_memory, tensor_step_mb
from gpt2lab.engine.knobs import (RUNGS, VIDEO_RUNGS, Knobs, Rung, build, get_rung, keep_freed_memory,
                                  matmul_precision, unsupported_reason)
from gpt2lab.engine.model import GPT, GPTConfig, get_config
from gpt2lab.engine.step import train_step
from gpt2lab.measure.flops import flops_per_token
from gpt2lab.measure.records import RungResult, loss_guard, summarize

DEFAULT_SEED = 1337


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


@dataclass(frozen=True)
class LadderSettings:
    """What every rung of one ladder run shares: the model, the shapes, the step counts, the device."""

    config: GPTConfig
    batch: int  # the micro-batch of every rung without one of its own (`Rung.batch`)
    seq: int
    steps: int
    warmup: int
    device: torch.device
    preset: str | None = None  # the model shape's name, when it was given by name
    seed: int = DEFAULT_SEED
    peak_tflops: float | None = None  # MFU against this instead of the datasheet peaks
    reference_batch: int | None = None  # the fp32 reference's micro-batch at bigger batches (see `run_ladder`)

    def batch_of(self, rung: Rung) -> int:
        return rung.batch or self.batch

    def check(self, ladder: list[Rung]) -> None:
        check_settings(self.config, self.batch, self.seq, self.steps, self.warmup, self.peak_tflops)
        for b in [r.batch for r in ladder if r.batch is not None] + [self.reference_batch or 1]:
            check_settings(self.config, b, self.seq, self.steps, self.warmup)

    def reference_micro(self, batch: int) -> int | None:
        """Micro-batch rows for an fp32 reference at `batch`: `reference_batch` where it divides a bigger batch."""
        micro = self.reference_batch or self.batch
        return micro if batch > micro and batch % micro == 0 else None

    def record(self, rung: Rung, hardware: dict, started: str) -> RungResult:
        """The rung's results line before anything is timed."""
        shape = {k: v for k, v in asdict(self.config).items() if k not in ("attn", "loss")}  # knobs, not the shape
        return RungResult(rung=rung.name, knobs=asdict(rung.knobs), config=shape, preset=self.preset,
                          batch=self.batch_of(rung), seq=self.seq, steps=self.steps, warmup=self.warmup,
                          device=str(self.device), hardware=hardware, started=started)


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
            return _time_steps(step, steps, warmup, device, on_step)
        finally:
            del built, step
            free_memory(device)


def _time_steps(step, steps: int, warmup: int, device: torch.device, on_step) -> dict:
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
    or a model shape's name. `batch` is the micro-batch of every rung that has none of its own (`Rung.batch`, e.g.
    batch64). MFU uses `peak_tflops` if given, else the device's datasheet peak for the rung's dtype (known GPUs
    only). Each rung's guard compares it with fp32 at the rung's own batch: where fp32 is not among the rungs at
    that batch it is run once, untimed, as the reference; at a batch larger than `reference_batch` (default:
    `batch`) and a multiple of it, as gradient accumulation over micro-batches of that many rows, which computes
    the same loss and gradient in the memory fp32 needs at that size (fp32 with naive attention at B=64, T=1024
    would need over 100 GB; `benchmarks/bench_past_the_video.py` passes 16).
    """
    preset = config if isinstance(config, str) else None
    settings = LadderSettings(get_config(config) if preset else config, batch, seq, steps, warmup,
                              torch.device(device), preset, seed, peak_tflops, reference_batch)
    return run_settings(resolve_rungs(rungs), settings, progress)


def run_settings(ladder: list[Rung], settings: LadderSettings, progress: bool = True) -> list[RungResult]:
    """`run_ladder` with its settings in one value: time every rung, then guard each against fp32."""
    from tqdm.auto import tqdm

    settings.check(ladder)
    if settings.device.type == "cpu":
        keep_freed_memory()  # as the trainer does: big freed tensors stay in the heap
    runner = _Runner(settings, ladder)
    with tqdm(total=len(ladder) * (settings.warmup + settings.steps), unit="step", disable=not progress) as bar:
        results = [runner.time(rung, bar) for rung in ladder]
        ref_loss = runner.reference_losses(results, bar)
    _guard_and_compare(ladder, results, ref_loss, settings.batch)
    return results


class _Runner:
    """One ladder run's shared inputs (the batches, the initial weights, the hardware record) and its steps."""

    def __init__(self, settings: LadderSettings, ladder: list[Rung]):
        s = self.settings = settings
        self.hardware = hardware_record(s.device)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.batches = {b: fixed_batch(s.config, b, s.seq, s.device) for b in dict.fromkeys(map(s.batch_of, ladder))}
        self.weights = initial_weights(s.config, s.seed)
        self.fpt = flops_per_token(s.config, s.seq)

    def _run(self, rung: Rung, batch: int, bar, micro: int | None = None) -> dict:
        s = self.settings
        return time_rung(rung, s.config, self.batches[batch], s.steps, s.warmup, s.device, self.weights, s.seed,
                         on_step=bar.update, micro=micro)

    def time(self, rung: Rung, bar) -> RungResult:
        """The rung timed, or skipped with the reason (unsupported here, or out of memory)."""
        bar.set_description(rung.name)
        r = self.settings.record(rung, self.hardware, self.started)
        r.skipped = unsupported_reason(rung.knobs, self.settings.device)
        if r.skipped is None:
            try:
                measured = self._run(rung, r.batch, bar)
            except torch.OutOfMemoryError:
                free_memory(self.settings.device)
                r.skipped = f"out of memory at batch {r.batch} x seq {r.seq}: try a smaller --batch-size"
            else:
                for k, v in measured.items():
                    setattr(r, k, v)
                summarize(r, self.fpt, self.settings.peak_tflops)
        if r.skipped is not None:
            bar.update(self.settings.warmup + self.settings.steps)
        return r

    def reference_losses(self, results: list[RungResult], bar) -> dict[int, float]:
        """fp32's loss at every batch some rung ran at: from the timed fp32 rung, else one untimed fp32 run."""
        ref_loss = {r.batch: r.loss for r in results if r.rung == "fp32" and r.skipped is None}
        for b in self.batches:
            if b in ref_loss or all(r.skipped is not None for r in results if r.batch == b):
                continue
            bar.set_description(f"fp32 reference at batch {b} (untimed)")
            bar.total += self.settings.warmup + self.settings.steps
            try:
                ref_loss[b] = self._run(RUNGS["fp32"], b, bar, self.settings.reference_micro(b))["loss"]
            except torch.OutOfMemoryError:
                free_memory(self.settings.device)
        return ref_loss


def _guard_and_compare(ladder: list[Rung], results: list[RungResult], ref_loss: dict[int, float], batch: int) -> None:
    """Each timed rung's loss guard against fp32 at its batch, and its speed-up per token over the timed fp32 rung."""
    base = next((r for r in results if r.rung == "fp32" and r.batch == batch and r.skipped is None), None)
    for rung, r in zip(ladder, results):
        if r.skipped is None:
            r.ref_loss = ref_loss.get(r.batch)
            r.guard_ok, r.guard = loss_guard(r.loss, r.ref_loss, rung.guard_atol, rung.guard_rtol)
            if base is not None and base.tokens_per_s:
                r.speedup = r.tokens_per_s / base.tokens_per_s  # per token: rungs may differ in batch


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
