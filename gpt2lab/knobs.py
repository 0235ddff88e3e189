"""Every speed knob of the video in one settings object, and the ladder of named rungs.

A rung is the previous rung plus one change, in the video's order:
fp32 -> tf32 -> bf16 -> compile -> flash -> vocab50304 -> fused_adamw.
`build()` turns knobs into a ready model + optimizer; the trainer and the benchmark both use it,
so what is timed is exactly what trains.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from gpt2lab.model import GPT, GPTConfig
from gpt2lab.optim import DecayReport, OptimConfig, make_adamw

MATMUL_PRECISIONS = ("highest", "high")  # "high" lets fp32 matmuls use TF32 tensor cores
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Knobs:
    matmul_precision: str = "highest"
    autocast: str = "none"  # none | bf16 | fp16 (fp16 adds a gradient scaler)
    compile: bool = False
    compile_mode: str | None = None  # None = torch.compile's default; e.g. "max-autotune"
    attn: str = "naive"  # naive | flash (F.scaled_dot_product_attention)
    pad_vocab: bool = False  # round vocab_size up to a multiple of 128: GPT-2's 50257 -> 50304
    fused_adamw: bool = False

    def __post_init__(self):
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {tuple(AUTOCAST_DTYPES)}, got {self.autocast!r}")

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.__dict__.items())


def _ladder() -> dict[str, Knobs]:
    steps = [
        ("fp32", {}),
        ("tf32", {"matmul_precision": "high"}),
        ("bf16", {"autocast": "bf16"}),
        ("compile", {"compile": True}),
        ("flash", {"attn": "flash"}),
        ("vocab50304", {"pad_vocab": True}),
        ("fused_adamw", {"fused_adamw": True}),
    ]
    rungs, knobs = {}, Knobs()
    for name, change in steps:
        knobs = replace(knobs, **change)
        rungs[name] = knobs
    return rungs


RUNGS: dict[str, Knobs] = _ladder()
FASTEST = RUNGS["fused_adamw"]


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """The "nice number" trick: CUDA kernels work in tiles of powers of two, so an ugly 50257-wide matmul
    runs slower than a 50304-wide one that does strictly more work. The extra rows are never a target,
    so training pushes their logits towards -inf and nothing else changes."""
    return -(-vocab_size // multiple) * multiple


def get_rung(name: str) -> Knobs:
    if name not in RUNGS:
        raise ValueError(f"unknown rung {name!r}; the ladder is: {' -> '.join(RUNGS)}")
    return RUNGS[name]


def unsupported_reason(knobs: Knobs, device: torch.device | str) -> str | None:
    """Why this hardware cannot run these knobs, or None. Such a rung is reported as skipped, never dropped."""
    device = torch.device(device)
    if knobs.autocast == "fp16" and device.type == "cpu":
        return "fp16 autocast with a gradient scaler is a GPU technique; CPUs have no fp16 matmul units"
    if knobs.autocast == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support (needs compute capability 8.0+, e.g. A100/H100/RTX 30xx)"
    if knobs.compile:
        reason = compile_unavailable_reason(device)
        if reason:
            return reason
    return None


def compile_unavailable_reason(device: torch.device) -> str | None:
    """torch.compile's inductor backend needs a C++ compiler on CPU and triton on CUDA."""
    import shutil

    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "torch.compile on CPU needs a C++ compiler (g++ or clang++), none found on PATH"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on CUDA needs triton, which is not installed"
    return None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory instead of returning it to the kernel. Returns whether it could.

    glibc serves allocations above 32 MB with mmap and unmaps them on free, so every CPU training step that
    allocates GPT-2's (B*T x 50257) logits and their gradient pays for fresh zeroed pages: on a 2-core
    AMD EPYC this made cpu-tiny-shakespeare steps 1.8x faster (920 -> 516 ms). Not one of the video's rungs (GPUs have
    PyTorch's caching allocator); the trainer and the benchmark apply it on CPU, to every rung alike.
    """
    import ctypes
    import platform

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@contextlib.contextmanager
def matmul_precision(knobs: Knobs):
    """Set torch's global fp32 matmul precision for the duration, then restore it."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(knobs.matmul_precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclass
class Built:
    """A model and optimizer built from knobs. Call `model`; save and sample from `raw`."""

    knobs: Knobs
    raw: GPT  # the plain module: state_dict, generate, parameter count
    model: torch.nn.Module  # what the training step calls: raw, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    decay_report: DecayReport
    device: torch.device
    scaler: torch.amp.GradScaler | None

    def autocast(self):
        dtype = AUTOCAST_DTYPES[self.knobs.autocast]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def build(
    knobs: Knobs,
    config: GPTConfig,
    device: torch.device | str,
    optim: OptimConfig = OptimConfig(),
    ddp_local_rank: int | None = None,
    seed: int | None = None,
) -> Built:
    """Model (attention and vocab from the knobs), optimizer, compile and DDP wrapping, in that order.

    The caller sets the matmul precision (`matmul_precision(knobs)`), since it is process-global.
    """
    device = torch.device(device)
    vocab = padded_vocab_size(config.vocab_size) if knobs.pad_vocab else config.vocab_size
    config = replace(config, attn=knobs.attn, vocab_size=vocab)
    if seed is not None:
        torch.manual_seed(seed)
    raw = GPT(config).to(device)
    optimizer, report = make_adamw(raw, optim, fused=knobs.fused_adamw, device_type=device.type)
    model: torch.nn.Module = raw
    if knobs.compile:
        model = torch.compile(model, mode=knobs.compile_mode)
    if ddp_local_rank is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[ddp_local_rank] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type) if knobs.autocast == "fp16" else None
    return Built(knobs, raw, model, optimizer, report, device, scaler)


def fastest_for(device: torch.device | str, allow_compile: bool = True) -> tuple[Knobs, list[str]]:
    """The last rung of the ladder with each knob this device cannot use (or, for compile, that the caller
    rules out) turned off, plus one note per knob turned off saying why. Use what the machine has."""
    from gpt2lab.bench import cpu_bf16_instructions

    device = torch.device(device)
    knobs, notes = FASTEST, []
    if knobs.autocast == "bf16":
        if device.type == "cpu" and cpu_bf16_instructions() == []:
            knobs, notes = replace(knobs, autocast="none"), notes + ["bf16 off: this CPU has no bf16 instructions"]
        elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
            knobs, notes = replace(knobs, autocast="none"), notes + ["bf16 off: this GPU has no bf16 support"]
    if knobs.compile:
        reason = compile_unavailable_reason(device) or (None if allow_compile else "not wanted by the caller")
        if reason:
            knobs, notes = replace(knobs, compile=False), notes + [f"compile off: {reason}"]
    return knobs, notes
