"""Time the optimization ladder on this hardware: the video's "timing each optimization", reproducible.

For each rung of `gpt2lab.knobs.RUNGS` the harness builds model and optimizer from the rung's knobs, runs
warm-up steps of the real training step (`gpt2lab.step.train_step`; torch.compile compiles here, so that
time is reported apart), then times N steps, synchronizing the device around each one. It reports median
and spread of ms/step, tokens/s, MFU, peak memory and the hardware, and checks that the rung still computes
the same thing: every rung starts from the same weights and trains on the same batch, so its loss after the
same number of steps must match the fp32 rung's. A fast but wrong rung fails loudly.

    python -m gpt2lab bench --rungs all --json results/ladder.jsonl --plot results/ladder.png
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from gpt2lab.errors import UserError
from gpt2lab.knobs import RUNGS, Knobs, build, get_rung, keep_freed_memory, matmul_precision, unsupported_reason
from gpt2lab.model import GPT, PRESETS, GPTConfig, get_config
from gpt2lab.reference import VIDEO_A100_LADDER, LadderReference
from gpt2lab.step import train_step

REFERENCE = VIDEO_A100_LADDER
DEFAULT_SEED = 1337

# The correctness guard: |loss - fp32 loss| <= GUARD_ATOL + GUARD_RTOL * fp32 loss. bf16, TF32, compiled
# kernels and flash attention only round differently, which moves the loss after a few dozen steps by
# hundredths at most; a broken rung (not training, wrong mask, overflow) moves it by tenths or more, or to NaN.
GUARD_ATOL, GUARD_RTOL = 0.02, 0.02

# On a GPU, the video's setting. On a CPU, a small model and batch so all seven rungs, including three
# cold torch.compile runs, finish in under three minutes on 2 cores.
GPU_DEFAULTS = dict(preset="gpt2", batch=16, seq=1024, steps=20, warmup=3)
CPU_DEFAULTS = dict(preset="cpu-small", batch=4, seq=128, steps=10, warmup=1)


# ---------------------------------------------------------------------------------------------- FLOPs, MFU


def flops_per_token(config: GPTConfig, seq: int) -> float:
    """Training FLOPs per token, forward + backward: 6*N + 12*n_layer*n_embd*seq (PaLM paper, appendix B).

    6*N: each weight does one multiply-add (2 FLOPs) per token in the forward pass and two in the backward
    (gradient with respect to the input, and with respect to the weight): 2 + 4 = 6. N counts every parameter
    except the position embedding, which is a lookup and does no arithmetic; the token embedding stays in
    because it is also the output head. (Biases and LayerNorm gains are counted too, a <1% overestimate.)
    12*n_layer*n_embd*seq: attention's two weightless matmuls, q@k^T and att@v, cost 2*seq*n_embd FLOPs each
    per token and layer in the forward pass, so 4*seq*n_embd, times 3 with the backward. Like PaLM we count
    the full seq x seq square although the causal mask zeroes half of it.
    Use the unpadded vocabulary: padding to 50304 adds work but no useful work, so MFU stays proportional to
    tokens/s across rungs.
    """
    with torch.device("meta"):  # shapes only: no memory, no init time
        n = GPT(config).num_params(non_embedding=True)
    return 6 * n + 12 * config.n_layer * config.n_embd * seq


# Dense peak TFLOP/s per dtype from NVIDIA's datasheets and architecture whitepapers (their tensor-core
# figures "with sparsity" halved). fp32 runs on the plain CUDA cores; tf32/bf16/fp16 on the tensor cores
# (GeForce cards: with fp32 accumulation, which is what autocast uses). First matching pattern wins.
_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H[12]00.*NVL", {"fp32": 60, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (r"H100.*PCIe", {"fp32": 51, "tf32": 378, "bf16": 756.5, "fp16": 756.5}),
    (r"H[12]00", {"fp32": 67, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),  # SXM
    (r"A100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    (r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}),
    (r"L40S", {"fp32": 91.6, "tf32": 183, "bf16": 362, "fp16": 362}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121}),
    (r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    (r"RTX 3090", {"fp32": 35.6, "tf32": 35.6, "bf16": 71, "fp16": 71}),
    (r"V100", {"fp32": 15.7, "tf32": 15.7, "fp16": 125}),  # no TF32 units (matmuls stay fp32), no bf16
    (r"\bT4\b", {"fp32": 8.1, "tf32": 8.1, "fp16": 65}),  # likewise
]


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Peak FLOP/s of a known GPU for matmuls in `dtype` (fp32 | tf32 | bf16 | fp16), else None."""
    for pattern, peaks in _PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peaks[dtype] * 1e12 if dtype in peaks else None
    return None


def matmul_dtype(knobs: Knobs) -> str:
    """The dtype the big matmuls run in under these knobs, for looking up the peak FLOP/s."""
    if knobs.autocast != "none":
        return knobs.autocast
    return "tf32" if knobs.matmul_precision == "high" else "fp32"


# ------------------------------------------------------------------------------------------------ hardware


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_bf16_instructions() -> list[str] | None:
    """The CPU's native bf16 instruction sets (Linux only; None where unknown). Without any, bf16 autocast
    on the CPU converts in software and is expected to be slower than fp32; with them it may not be."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    return sorted(f for f in flags.split() if f in ("avx512_bf16", "amx_bf16", "avx_ne_convert"))


def hardware_record(device: torch.device | str) -> dict:
    """What a timing means nothing without: device, software versions, CPU and thread count."""
    device = torch.device(device)
    record = {
        "device": device.type,
        "device_name": _cpu_model(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_bf16_instructions(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(
            device_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            compute_capability=f"{props.major}.{props.minor}",
        )
    return record


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels: GPU work is asynchronous, so a timer without this measures only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _CLEAR_REFS.exists():
        try:
            _CLEAR_REFS.write_text("5")  # Linux: reset this process's peak RSS (VmHWM)
        except OSError:
            pass


def _peak_memory(device: torch.device) -> tuple[float | None, str | None]:
    """(MiB, what was measured): CUDA's max allocated, or the process's peak RSS (Python and torch included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    if device.type != "cpu":
        return None, None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "process peak RSS"
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return maxrss / (2**20 if sys.platform == "darwin" else 1024), "process peak RSS since start"


# ------------------------------------------------------------------------------------------------- results


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
    peak_tflops: float | None = None  # the peak MFU is relative to
    mfu: float | None = None
    first_step_s: float | None = None  # the first warm-up step: includes torch.compile's compilation
    warmup_s: float | None = None  # all warm-up steps
    peak_mem_mb: float | None = None
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


def append_jsonl(path: str | os.PathLike, results: list[RungResult]) -> None:
    """Append one JSON line per rung, so repeated runs (and other machines) accumulate in one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")


def load_jsonl(path: str | os.PathLike) -> list[RungResult]:
    """Every rung of every run in a results file; group runs by `started`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [RungResult.from_dict(json.loads(line)) for line in lines if line.strip()]


def loss_guard(loss: float, ref_loss: float | None) -> tuple[bool | None, str]:
    """Is this rung's loss finite and within tolerance of the fp32 rung's? (ok, explanation)"""
    if not math.isfinite(loss):
        return False, f"FAIL: loss is {loss}"
    if ref_loss is None:
        return None, "no fp32 reference"
    diff, tol = abs(loss - ref_loss), GUARD_ATOL + GUARD_RTOL * abs(ref_loss)
    if diff > tol:
        return False, f"FAIL: loss {loss:.4f} vs fp32 {ref_loss:.4f}, off by {diff:.3g} > {tol:.3g}"
    return True, "bit-identical to fp32" if diff == 0 else f"|dloss| {diff:.1e} <= {tol:.2f}"


# -------------------------------------------------------------------------------------------------- ladder


def resolve_rungs(rungs) -> list[tuple[str, Knobs]]:
    """'all', a comma-separated string of rung names, or a list of names and (name, Knobs) pairs."""
    if isinstance(rungs, str):
        rungs = list(RUNGS) if rungs.strip() == "all" else [r.strip() for r in rungs.split(",") if r.strip()]
    resolved = [r if isinstance(r, tuple) else (r, get_rung(r)) for r in rungs]
    names = [name for name, _ in resolved]
    if not names:
        raise ValueError("no rungs given")
    if len(set(names)) != len(names):
        raise ValueError(f"rung listed twice: {', '.join(names)}")
    return resolved


@functools.lru_cache(maxsize=1)
def _shakespeare_tokens() -> tuple[int, ...]:
    from gpt2lab.corpus import load_text
    from gpt2lab.tokenizer import encode

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


def _initial_weights(config: GPTConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return GPT(config).state_dict()


@torch.no_grad()
def _load_initial_weights(model: GPT, weights: dict[str, torch.Tensor]) -> None:
    """Start every rung from the same weights, so the guard compares arithmetic, not initializations.

    (With the same seed alone, the padded vocabulary would draw 47 more embedding rows and shift every later
    random draw.) A padded embedding keeps its extra rows: no input or target ever uses them.
    """
    for name, dst in model.state_dict().items():
        src = weights[name]
        dst[: src.size(0)].copy_(src)


def _free_memory(device: torch.device) -> None:
    torch.compiler.reset()  # drop compiled graphs (and their references to the last rung's model)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _time_rung(built, batch_xy, steps: int, warmup: int, device: torch.device, bar) -> dict:
    """Warm up, then time `steps` calls of the real training step. Returns the raw measurements."""
    next_batch = lambda: batch_xy  # noqa: E731 - the same batch every step: we time compute, not data loading
    _synchronize(device)
    first_step_s = None
    t0 = time.perf_counter()
    for i in range(warmup):
        train_step(built, next_batch)
        _synchronize(device)
        if i == 0:
            first_step_s = time.perf_counter() - t0
        bar.update()
    warmup_s = time.perf_counter() - t0
    _reset_peak_memory(device)
    step_ms = []
    for _ in range(steps):
        t = time.perf_counter()
        result = train_step(built, next_batch)
        _synchronize(device)
        step_ms.append((time.perf_counter() - t) * 1000)
        bar.update()
    peak_mem_mb, mem_kind = _peak_memory(device)
    return dict(
        load_avg=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        step_ms=step_ms,
        first_step_s=first_step_s,
        warmup_s=warmup_s if warmup else None,
        peak_mem_mb=peak_mem_mb,
        mem_kind=mem_kind,
        loss=result.loss.item(),
    )


def _run_rung(knobs: Knobs, config, weights, batch_xy, steps, warmup, device, seed, bar) -> dict:
    with matmul_precision(knobs):  # process-global: set for this rung only
        built = build(knobs, config, device, seed=seed)
        _load_initial_weights(built.raw, weights)
        try:
            return _time_rung(built, batch_xy, steps, warmup, device, bar)
        finally:
            del built
            _free_memory(device)


def check_settings(config: GPTConfig, batch: int, seq: int, steps: int, warmup: int, peak_tflops=None) -> None:
    """ValueError with one clear line for settings the ladder cannot run with."""
    for name, value in (("batch", batch), ("seq", seq), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if seq > config.block_size:
        raise ValueError(f"seq {seq} exceeds the model's block_size {config.block_size}")
    if peak_tflops is not None and peak_tflops <= 0:
        raise ValueError(f"peak TFLOP/s must be positive, got {peak_tflops}")


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
) -> list[RungResult]:
    """Time each rung on `device`; one RungResult per rung, in order, skipped rungs included with the reason.

    `rungs`: 'all', 'fp32,bf16', or a list of rung names and (name, Knobs) pairs. `config`: a GPTConfig or
    a preset name. MFU uses `peak_tflops` if given, else the device's datasheet peak for the rung's dtype
    (known GPUs only). If fp32 is not among the rungs it is still run once, untimed, as the guard's reference.
    """
    from tqdm.auto import tqdm

    preset = config if isinstance(config, str) else None
    config = get_config(config) if isinstance(config, str) else config
    device = torch.device(device)
    ladder = resolve_rungs(rungs)
    check_settings(config, batch, seq, steps, warmup, peak_tflops)

    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does: big freed tensors stay in the heap
    hardware = hardware_record(device)
    batch_xy = fixed_batch(config, batch, seq, device)
    weights = _initial_weights(config, seed)
    fpt = flops_per_token(config, seq)
    common = dict(
        config={k: v for k, v in asdict(config).items() if k != "attn"},  # attention is a knob, not the shape
        preset=preset, batch=batch, seq=seq, steps=steps, warmup=warmup,
        device=str(device), hardware=hardware, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    run = functools.partial(
        _run_rung, config=config, weights=weights, batch_xy=batch_xy, steps=steps, warmup=warmup,
        device=device, seed=seed,
    )

    results = []
    with tqdm(total=len(ladder) * (warmup + steps), unit="step", disable=not progress) as bar:
        for name, knobs in ladder:
            bar.set_description(name)
            r = RungResult(rung=name, knobs=asdict(knobs), **common)
            r.skipped = unsupported_reason(knobs, device)
            if r.skipped is None:
                try:
                    measured = run(knobs, bar=bar)
                except torch.OutOfMemoryError:
                    _free_memory(device)
                    r.skipped = f"out of memory at batch {batch} x seq {seq}: try a smaller --batch"
                else:
                    for k, v in measured.items():
                        setattr(r, k, v)
                    _summarize(r, fpt, peak_tflops)
            if r.skipped is not None:
                bar.update(warmup + steps)
            results.append(r)

        base = next((r for r in results if r.rung == "fp32"), None)
        ref_loss = base.loss if base else None
        if base is None and any(r.skipped is None for r in results):
            bar.set_description("fp32 reference (untimed)")
            bar.total += warmup + steps
            try:
                ref_loss = run(RUNGS["fp32"], bar=bar)["loss"]
            except torch.OutOfMemoryError:
                _free_memory(device)
    for r in results:
        if r.skipped is None:
            r.ref_loss = ref_loss
            r.guard_ok, r.guard = loss_guard(r.loss, ref_loss)
            if base is not None and base.ms_median:
                r.speedup = base.ms_median / r.ms_median
    return results


def _summarize(r: RungResult, fpt: float, peak_tflops: float | None) -> None:
    r.ms_median = statistics.median(r.step_ms)
    r.ms_min, r.ms_max = min(r.step_ms), max(r.step_ms)
    r.tokens_per_s = r.batch * r.seq / (r.ms_median / 1000)
    r.flops_per_token = fpt
    if peak_tflops is not None:
        peak = peak_tflops * 1e12
    elif r.hardware["device"] == "cuda":
        peak = peak_flops(r.hardware["device_name"], matmul_dtype(Knobs(**r.knobs)))
    else:
        peak = None
    if peak:
        r.peak_tflops = peak / 1e12
        r.mfu = r.tokens_per_s * fpt / peak


# ----------------------------------------------------------------------------------------- table and plot


def _describe_run(r: RungResult) -> str:
    """Hardware and workload in one line, for table headers and plot legends."""
    hw = r.hardware
    model = r.preset or f"{r.config['n_layer']}-layer {r.config['n_embd']}-wide GPT"
    return (
        f"{hw['device_name']} ({hw['device']}, {hw['torch_threads']} threads, torch {hw['torch']}), "
        f"{model} B={r.batch} T={r.seq}"
    )


def compare(before: RungResult, after: RungResult) -> tuple[float, str]:
    """Speed-up of `after` over `before` (ratio of medians) and an honest verdict: "faster" or "slower" only
    when the two rungs' min-max ranges of step times do not overlap, else "within noise"."""
    ratio = before.ms_median / after.ms_median
    if after.ms_max < before.ms_min:
        return ratio, "faster"
    if after.ms_min > before.ms_max:
        return ratio, "slower"
    return ratio, "within noise"


def format_table(results: list[RungResult]) -> str:
    """A fixed-width table, one row per rung; skipped rungs say why, guard failures say FAIL."""
    head = (
        f"{'rung':<12}{'ms/step':>10}{'(min-max)':>17}{'tok/s':>10}{'vs fp32':>9}{'MFU':>7}"
        f"{'mem MiB':>9}{'1st/warm-up s':>15}{'load':>6}{'loss':>9}  guard"
    )
    lines = [head, "-" * len(head)]
    if results:
        r = results[0]
        lines.insert(0, f"{_describe_run(r)}: median of {r.steps} timed steps after {r.warmup} warm-up")
    for r in results:
        if r.skipped is not None:
            lines.append(f"{r.rung:<12}skipped: {r.skipped}")
            continue
        spread = f"({r.ms_min:.1f}-{r.ms_max:.1f})"
        speedup = f"{r.speedup:.2f}x" if r.speedup is not None else "n/a"
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        mem = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "n/a"
        warm = f"{r.first_step_s:.1f}/{r.warmup_s:.1f}" if r.warmup else "-"
        load = f"{r.load_avg:.1f}" if r.load_avg is not None else "n/a"
        lines.append(
            f"{r.rung:<12}{r.ms_median:>10.1f}{spread:>17}{r.tokens_per_s:>10,.0f}{speedup:>9}{mfu:>7}"
            f"{mem:>9}{warm:>15}{load:>6}{r.loss:>9.4f}  {r.guard}"
        )
    failed = [r.rung for r in results if r.guard_ok is False]
    if failed:
        lines.append(f"CORRECTNESS GUARD FAILED for: {', '.join(failed)} (fast but wrong: do not use these numbers)")
    return "\n".join(lines)


def _bars(ax, xs, values, width, fmt, **kwargs):
    """Bars with value labels; a None value leaves a gap."""
    kept = [(x, v, i) for i, (x, v) in enumerate(zip(xs, values)) if v is not None]
    for key in ("color", "yerr"):  # per-bar options follow the bars that are kept
        if isinstance(kwargs.get(key), list):
            per_bar = kwargs[key]
            kwargs[key] = [per_bar[i] for _, _, i in kept] if key == "color" else [
                [row[i] for _, _, i in kept] for row in per_bar
            ]
    bars = ax.bar([x for x, _, _ in kept], [v for _, v, _ in kept], width, **kwargs)
    ax.bar_label(bars, labels=[fmt(v) for _, v, _ in kept], fontsize=7, padding=2)


def plot_ladder(results: list[RungResult], reference: LadderReference | None = REFERENCE):
    """ms/step (log scale) and speed-up over fp32 per rung: this machine's run beside the reference's.

    `results` is one ladder run (RungResults or their dicts). Returns a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    results = [RungResult.from_dict(r) if isinstance(r, dict) else r for r in results]
    names = [r.rung for r in results]
    ref_names = [n for n in names if reference and n in reference.ms_per_step]
    width = 0.4 if ref_names else 0.8
    ours_x = [i - width / 2 if ref_names else i for i in range(len(names))]
    ref_x = [i + width / 2 for i in range(len(names))]
    ran = [r.skipped is None for r in results]
    colors = ["tab:red" if r.guard_ok is False else "tab:blue" for r in results]  # red: failed the guard
    spread = [[r.ms_median - r.ms_min if ok else 0 for r, ok in zip(results, ran)],
              [r.ms_max - r.ms_median if ok else 0 for r, ok in zip(results, ran)]]
    ms_fmt, up_fmt = (lambda v: f"{v:.0f}" if v >= 10 else f"{v:.2g}"), (lambda v: f"{v:.2f}x")

    fig, (ax_ms, ax_up) = plt.subplots(1, 2, figsize=(13, 4.8))
    ours_label = f"measured (median, whiskers min-max): {_describe_run(results[0])}"
    _bars(ax_ms, ours_x, [r.ms_median for r in results], width, ms_fmt, color=colors, yerr=spread,
          ecolor="black", capsize=2, label=ours_label)
    _bars(ax_up, ours_x, [r.speedup for r in results], width, up_fmt, color=colors)
    for x, r in zip(ours_x, results):
        for ax in (ax_ms, ax_up):
            if r.skipped is not None:
                ax.text(x, 0.02, "skipped", rotation=90, ha="center", va="bottom", fontsize=8,
                        transform=ax.get_xaxis_transform())
    if ref_names:
        ref_ms = [reference.ms_per_step.get(n) for n in names]
        ref_up = [reference.speedup(n) if n in reference.ms_per_step else None for n in names]
        _bars(ax_ms, ref_x, ref_ms, width, ms_fmt, color="tab:orange", label=f"reference, {reference.label}")
        _bars(ax_up, ref_x, ref_up, width, up_fmt, color="tab:orange")
    for ax, ylabel in ((ax_ms, "ms per training step (log scale)"), (ax_up, "speed-up over fp32 (x)")):
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    ax_ms.set_yscale("log")
    ax_ms.set_ylim(top=ax_ms.get_ylim()[1] * 1.6)  # room for the value labels
    ax_up.margins(y=0.1)
    ax_up.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax_ms.set_title("time per step (lower is better)")
    ax_up.set_title("speed-up over the fp32 rung of the same run (higher is better)")
    handles, labels = ax_ms.get_legend_handles_labels()
    if "tab:red" in colors:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:red"))
        labels.append("failed the correctness guard: loss differs from fp32's, timing not valid")
    fig.legend(handles, labels, loc="lower center", fontsize=8, frameon=False)
    fig.suptitle("The optimization ladder: each rung is the previous one plus one change")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


# ----------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)} (default: gpt2 on CUDA, "
                        f"{CPU_DEFAULTS['preset']} on CPU)")
    parser.add_argument("--rungs", default="all", help=f"'all' or a comma list of: {','.join(RUNGS)}")
    parser.add_argument("--batch", type=int, help=f"batch size B (default {GPU_DEFAULTS['batch']} on CUDA, "
                        f"{CPU_DEFAULTS['batch']} on CPU)")
    parser.add_argument("--seq", type=int, help=f"sequence length T (default {GPU_DEFAULTS['seq']} on CUDA, "
                        f"{CPU_DEFAULTS['seq']} on CPU)")
    parser.add_argument("--steps", type=int, help=f"timed steps per rung (default {GPU_DEFAULTS['steps']} on "
                        f"CUDA, {CPU_DEFAULTS['steps']} on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps per rung, compilation included "
                        f"(default {GPU_DEFAULTS['warmup']} on CUDA, {CPU_DEFAULTS['warmup']} on CPU)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    parser.add_argument("--peak-tflops", type=float, help="peak TFLOP/s for MFU on hardware we have no figure for")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="initial weights, the same for every rung")
    parser.add_argument("--json", metavar="PATH", help="append one JSON line per rung to this results file")
    parser.add_argument("--plot", metavar="PATH", help="save the ladder plot (PNG, SVG, ...) here")


def _parse_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (torch {torch.__version__})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here")
    return device


def _check_writable(path: str, option: str) -> None:
    """Fail before a minutes-long run, not after it."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir():
            raise IsADirectoryError(21, "is a directory")
        if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise PermissionError(13, "permission denied")
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write there ({e.strerror or e})") from None


def run(args) -> int:
    device = _parse_device(args.device)
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    preset = args.preset or defaults["preset"]
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    config = get_config(preset)
    opts = {k: defaults[k] if getattr(args, k) is None else getattr(args, k) for k in ("batch", "seq", "steps", "warmup")}
    try:
        check_settings(config, peak_tflops=args.peak_tflops, **opts)
        rungs = resolve_rungs(args.rungs)
    except ValueError as e:
        raise UserError(str(e)) from None
    for path, option in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            _check_writable(path, option)

    t0 = time.perf_counter()
    results = run_ladder(rungs, preset, device=device, peak_tflops=args.peak_tflops, seed=args.seed, **opts)
    wall_s = time.perf_counter() - t0
    print(format_table(results))
    print(f"ladder wall time: {wall_s:.0f} s (model builds, warm-up and compilation included)")
    if args.json:
        append_jsonl(args.json, results)
        print(f"appended {len(results)} lines to {args.json}")
    if args.plot:
        plot_ladder(results).savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot saved to {args.plot}")
    return 1 if any(r.guard_ok is False for r in results) else 0
