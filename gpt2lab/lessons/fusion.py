"""Kernel fusion, measured on one function: GPT-2's tanh-GELU, eager vs torch.compile.

Written out by hand, 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3))) is eight element-wise operations. Run
eagerly, each one is its own kernel: it reads its inputs from memory and writes its result back, so every
intermediate makes a round trip. torch.compile's inductor backend fuses the eight into one kernel (Triton on a
GPU, C++ on a CPU) that reads x once and writes the result once. The arithmetic is identical; the memory traffic
is not, and element-wise work is limited by memory, not arithmetic. This module counts the kernels (profiler),
the bytes (tensor sizes), the time (`gpt2lab.base.timing.measure`), and shows the code inductor generated.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_by_hand(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation of GELU, one PyTorch operation per arithmetic step (eight of them)."""
    return 0.5 * x * (1.0 + torch.tanh(SQRT_2_OVER_PI * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_builtin(x: torch.Tensor) -> torch.Tensor:
    """The same function as PyTorch's own hand-fused kernel: what `nn.GELU(approximate="tanh")` in our model runs."""
    return F.gelu(x, approximate="tanh")


# -------------------------------------------------------------------------------------------------- bytes


@dataclass(frozen=True)
class OpTraffic:
    """One operation PyTorch ran, and the bytes it had to read and write (its tensors' sizes)."""

    op: str
    bytes_read: int
    bytes_written: int

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


def eager_traffic(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> list[OpTraffic]:
    """Every aten operation `fn(x)` runs eagerly, with the bytes of the tensors it reads and writes.

    Python scalars (0.5, 3.0) are baked into the kernel, not read from memory, so only tensors count. This is
    the least traffic each separate kernel can cause; caches may save some of it when tensors are small.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    ops: list[OpTraffic] = []

    def nbytes(values) -> int:
        return sum(t.numel() * t.element_size() for t in tree_leaves(values) if isinstance(t, torch.Tensor))

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            ops.append(OpTraffic(str(func.overloadpacket.__name__), nbytes((args, kwargs)), nbytes(out)))
            return out

    with Record():
        fn(x)
    return ops


def fused_traffic(x: torch.Tensor) -> int:
    """Bytes one fused element-wise kernel must move: read x once, write a result of x's size once."""
    return 2 * x.numel() * x.element_size()


# ------------------------------------------------------------------------------------------------ kernels


def launched_kernels(fn: Callable[[], object], device: torch.device | str) -> list[str]:
    """The kernels one call of `fn` launched, by name, from `torch.profiler`.

    On CUDA: the GPU kernels. On a CPU there is no launch as such: every top-level aten operation is one
    kernel (one pass over memory), and a compiled region's kernels are recorded by name when inductor's
    `cpp.enable_kernel_profile` is on (`compile_with_code` turns it on).
    """
    from torch.profiler import ProfilerActivity, profile

    from gpt2lab.base.timing import quiet_stderr

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with quiet_stderr(), profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = list(prof.events())
    if device.type == "cuda":
        return [e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                and not e.name.startswith(("Memcpy", "Memset"))]
    names = []
    for e in events:
        inductor_kernel = "cpp_fused" in e.name or e.name.startswith("graph_")
        if inductor_kernel or (e.name.startswith("aten::") and e.cpu_parent is None):
            names.append(e.name)
    return names


# ----------------------------------------------------------------------------------------- compiled code


@dataclass
class Compiled:
    """A compiled function, the source inductor generated for it (None if it could not be captured, with why),
    and how long the first call took (compilation included)."""

    fn: Callable
    code: str | None
    first_call_s: float
    why_no_code: str | None = None


def compile_with_code(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Compiled:
    """torch.compile `fn`, call it once on `x` (which compiles), and keep the code inductor wrote.

    `run_and_get_code` is a torch._inductor utility (not a stable API), so a failure to capture the code is
    reported, not raised: the compiled function still works.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(fn)
    t0 = time.perf_counter()
    # Name the CPU kernels in the profiler, for this compilation only (a global setting would change every
    # later compilation in the process, and their cache keys).
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        try:
            from torch._inductor.utils import run_and_get_code

            _, codes = run_and_get_code(compiled, x)
            code, why = "\n".join(codes), None
        except Exception as e:  # noqa: BLE001 - private API: say what happened and carry on
            compiled(x)
            code, why = None, f"could not capture inductor's code ({type(e).__name__}: {e})"
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return Compiled(compiled, code, time.perf_counter() - t0, why)


def kernel_names(code: str) -> list[str]:
    """The fused kernels defined in inductor's generated module (cpp_fused_* on CPU, triton_* on CUDA)."""
    return re.findall(r"^(cpp_fused_\w+|triton_\w+)\s*=\s*async_compile\.", code, flags=re.M)


def kernel_excerpt(code: str, max_lines: int = 40) -> str:
    """The body of the first fused kernel in inductor's generated module: Triton source or C++ source."""
    lines = code.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^(cpp_fused_\w+|triton_\w+)\s*=", line)), None)
    if start is None:
        return ""
    body = []
    for line in lines[start:]:
        if body and (line.startswith("''', ") or line.startswith("''')")):
            break
        body.append(line)
    noise = ("#include", "integer_div_error", "RecordFunctionHandle", "int tid = ")  # bookkeeping, not the math
    keep = [line for line in body if line.strip() and not any(n in line for n in noise)]
    return "\n".join(keep[:max_lines]) + ("\n    ..." if len(keep) > max_lines else "")


# ------------------------------------------------------------------------------------------- the experiment


@dataclass
class Variant:
    """One way of computing GELU, measured: kernels, bytes it must move, median time, effective bandwidth."""

    name: str
    kernels: list[str]
    bytes: int
    median_ms: float
    first_call_s: float | None = None

    @property
    def bandwidth(self) -> float:
        """Bytes it must move per second: how close an element-wise kernel comes to the memory's speed."""
        return self.bytes / (self.median_ms / 1000)


def gelu_experiment(numel: int, device: torch.device | str, dtype: torch.dtype = torch.float32,
                    steps: int = 10, warmup: int = 2) -> tuple[list[Variant], Compiled]:
    """GELU on `numel` values three ways: by hand eagerly, PyTorch's built-in kernel, by hand compiled."""
    from gpt2lab.base.timing import measure

    device = torch.device(device)
    x = torch.randn(numel, device=device, dtype=dtype)
    compiled = compile_with_code(gelu_by_hand, x)
    variants = []
    for name, fn, nbytes, first in (
        ("eager, by hand (8 ops)", gelu_by_hand, sum(op.bytes for op in eager_traffic(gelu_by_hand, x)), None),
        ("eager, F.gelu (hand-fused)", gelu_builtin, fused_traffic(x), None),
        ("torch.compile, by hand", compiled.fn, fused_traffic(x), compiled.first_call_s),
    ):
        m = measure(lambda: fn(x), device, steps=steps, warmup=warmup)
        variants.append(Variant(name, launched_kernels(lambda: fn(x), device), nbytes, m.median_ms, first))
    return variants, compiled
