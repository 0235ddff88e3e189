"""One honest timer and one honest memory probe, used by every measurement in the book.

GPU work is asynchronous: a Python timer around a kernel launch measures the launch, not the work, so
`measure` synchronizes the device around every call. Warm-up calls (where torch.compile compiles and
caches fill) are timed apart, and the median, not the mean, is the headline: one slow step caused by
another process must not move it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels; a no-op on the CPU, where every call returns when its work is done."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Measurement:
    times_ms: list[float]  # every timed call
    first_s: float | None = None  # the first warm-up call (includes compilation, if any)
    warmup_s: float | None = None  # all warm-up calls
    last: object = field(default=None, repr=False)  # what the last timed call returned

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the calls disagreed. Above ~0.5, more steps (or a quieter machine)."""
        return (self.max_ms - self.min_ms) / self.median_ms


def measure(fn: Callable[[], object], device: torch.device | str, steps: int = 10, warmup: int = 1,
            on_call: Callable[[], None] | None = None) -> Measurement:
    """Call `fn` `warmup` times untimed, then `steps` times timed, synchronizing `device` around each call."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    device = torch.device(device)
    synchronize(device)
    first_s, t0 = None, time.perf_counter()
    for i in range(warmup):
        fn()
        synchronize(device)
        if i == 0:
            first_s = time.perf_counter() - t0
        if on_call:
            on_call()
    warmup_s = time.perf_counter() - t0 if warmup else None
    times, out = [], None
    for _ in range(steps):
        t = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append((time.perf_counter() - t) * 1000)
        if on_call:
            on_call()
    return Measurement(times, first_s, warmup_s, out)


# ------------------------------------------------------------------------------------------------- memory

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _rss_field(name: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give freed heap pages back to the kernel (glibc), so the resident size shows what is live now."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class PeakMemory:
    """Peak memory of a block of code, and what was already in use when it began (MiB).

    On CUDA: the caching allocator's max allocated bytes. On a Linux CPU: the process's peak resident size
    during the block, after handing freed heap back to the kernel at its start, so the figure belongs to this
    block alone (not to everything the process did before). `step_mb` is what the block added on top of what
    it started with: activations, gradients, temporary buffers.
    """

    device: torch.device
    peak_mb: float | None = None
    start_mb: float | None = None
    kind: str | None = None

    @property
    def step_mb(self) -> float | None:
        return None if self.peak_mb is None or self.start_mb is None else self.peak_mb - self.start_mb


@contextlib.contextmanager
def peak_memory(device: torch.device | str):
    """`with peak_memory(device) as mem: ...` then read `mem.peak_mb`, `mem.start_mb`, `mem.step_mb`."""
    mem = PeakMemory(torch.device(device))
    if mem.device.type == "cuda":
        synchronize(mem.device)
        torch.cuda.reset_peak_memory_stats(mem.device)
        mem.start_mb = torch.cuda.memory_allocated(mem.device) / 2**20
        yield mem
        synchronize(mem.device)
        mem.peak_mb, mem.kind = torch.cuda.max_memory_allocated(mem.device) / 2**20, "cuda max allocated"
        return
    can_reset = mem.device.type == "cpu" and _CLEAR_REFS.exists()
    if can_reset:
        _trim_heap()
        try:
            _CLEAR_REFS.write_text("5")  # Linux: reset the peak resident size (VmHWM) to the current one
        except OSError:
            can_reset = False
        mem.start_mb = _rss_field("VmRSS")
    yield mem
    if can_reset:
        mem.peak_mb, mem.kind = _rss_field("VmHWM"), "process peak RSS during the block"
    elif mem.device.type == "cpu":
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        mem.peak_mb = maxrss / (2**20 if sys.platform == "darwin" else 1024)
        mem.kind = "process peak RSS since start"


def tensor_step_mb(fn: Callable[[], object], device: torch.device | str) -> float | None:
    """MiB of tensor memory one call of `fn` holds at its peak on top of what was held before it: activations,
    gradients, temporary buffers. The same quantity on every device: CUDA's allocator counts it; on a CPU the
    profiler's allocation events are replayed (one untimed call; the process's resident size, which
    `peak_memory` reports, also holds freed heap that malloc keeps, and code and libraries)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    if device.type != "cpu":
        return None
    events = cpu_allocations(fn)
    if events is None:
        return None
    held = peak = 0
    for nbytes in events:  # frees of tensors made before the call are not recorded: the count starts at zero
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def cpu_allocations(fn: Callable[[], object]) -> list[int] | None:
    """Every CPU tensor allocation (bytes, positive) and free (negative) during one call of `fn`, in order, as
    PyTorch's profiler records them; None on a torch whose profiler keeps its raw events elsewhere."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        return [e.nbytes() for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    except AttributeError:  # no figure rather than a wrong one
        return None


def load_average() -> float | None:
    """1-minute load average: above the core count, other processes were competing for the CPU."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@contextlib.contextmanager
def quiet_stderr():
    """Silence writes to file descriptor 2 for the duration: the profiler's C++ start/stop lines, which a
    notebook would otherwise show as stderr output under every profiled cell."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
