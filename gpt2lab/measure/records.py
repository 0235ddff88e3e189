"""A ladder run's results: the schema of one rung's line (`RungResult`), the JSONL files that hold them, and the
judgements made from them (the loss guard, the comparison of two rungs).

A results file accumulates: every `gpt2lab bench --json` appends one line per rung, so repeated runs and other
machines sit in one file, grouped by their start time (`runs`). Files written by older versions still load:
unknown fields are dropped, fields added since take their defaults, and the one-yardstick MFU column is derived
from what an old line recorded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from gpt2lab.base.hardware import best_peak_flops, peak_flops
from gpt2lab.engine.knobs import Knobs
from gpt2lab.measure.flops import mfu

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


def summarize(r: RungResult, flops_per_token: float, peak_tflops: float | None = None) -> None:
    """Fill in what the timed steps (`r.step_ms`) say: median and range of ms/step, tokens/s and MFU."""
    import statistics

    r.ms_median = statistics.median(r.step_ms)
    r.ms_min, r.ms_max = min(r.step_ms), max(r.step_ms)
    r.tokens_per_s = r.batch * r.seq / (r.ms_median / 1000)
    r.flops_per_token = flops_per_token
    _set_mfu(r, peak_tflops)


def _set_mfu(r: RungResult, peak_tflops: float | None, own_dtype: bool = True) -> None:
    """MFU against the peak of the rung's own matmul dtype (`own_dtype`) and against the device's best 16-bit
    peak: both `peak_tflops` where given, else a known GPU's datasheet peaks (none for CPUs)."""
    if peak_tflops is not None:
        peak = best = peak_tflops * 1e12
    elif r.hardware.get("device") == "cuda":
        name = r.hardware["device_name"]
        peak = peak_flops(name, Knobs(**r.knobs).matmul_dtype) if own_dtype else None
        best = best_peak_flops(name)
    else:
        return
    if peak:
        r.peak_tflops, r.mfu = peak / 1e12, mfu(r.tokens_per_s, r.flops_per_token, peak)
    if best:
        r.best_peak_tflops, r.mfu_best = best / 1e12, mfu(r.tokens_per_s, r.flops_per_token, best)


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
        if r.mfu_best is None and r.tokens_per_s and r.flops_per_token:
            _set_mfu(r, None, own_dtype=False)
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
