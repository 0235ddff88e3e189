"""Every speed knob of the video in one settings object, and the ladder of named rungs.

A rung is the previous rung plus one change, in the video's order:
fp32 -> tf32 -> bf16 -> compile -> flash -> vocab50304 -> fused_adamw,
then past the video (chapter 14): -> fused_ce -> max_autotune -> batch64 -> fp8.
`build()` turns knobs into a ready model + optimizer; the trainer and the benchmark both use it,
so what is timed is exactly what trains.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from gpt2lab.engine.model import GPT, LOSS_IMPLS, GPTConfig
from gpt2lab.engine.optim import DecayReport, MuonAdamW, OptimConfig, make_optimizer

MATMUL_PRECISIONS = ("highest", "high")  # "high" lets fp32 matmuls use TF32 tensor cores
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FAST_EXTRA = "pip install 'gpt2lab[fast]'"  # the optional GPU packages: torchao (fp8), liger-kernel


@dataclass(frozen=True)
class Knobs:
    matmul_precision: str = "highest"
    autocast: str = "none"  # none | bf16 | fp16 (fp16 adds a gradient scaler)
    compile: bool = False
    compile_mode: str | None = None  # None = torch.compile's default; e.g. "max-autotune"
    attn: str = "naive"  # naive | flash (F.scaled_dot_product_attention)
    pad_vocab: bool = False  # round vocab_size up to a multiple of 128: GPT-2's 50257 -> 50304
    fused_adamw: bool = False
    loss: str = "full"  # full | chunked (head + cross-entropy fused in chunks) | liger (Triton, `fast` extra)
    fp8: bool = False  # float8 matmuls in the transformer blocks' Linear layers (torchao, `fast` extra)

    def __post_init__(self):
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {tuple(AUTOCAST_DTYPES)}, got {self.autocast!r}")
        if self.loss not in LOSS_IMPLS:
            raise ValueError(f"loss must be one of {LOSS_IMPLS}, got {self.loss!r}")

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.__dict__.items())

    @property
    def matmul_dtype(self) -> str:
        """The dtype the big matmuls run in under these knobs (fp32|tf32|bf16|fp16|fp8): which peak FLOP/s
        (`gpt2lab.base.hardware.peak_flops`) their MFU is measured against."""
        if self.fp8:  # the blocks' matmuls; the head stays in the autocast dtype
            return "fp8"
        if self.autocast != "none":
            return self.autocast
        return "tf32" if self.matmul_precision == "high" else "fp32"


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder: its knobs, the one change it makes, and how it is checked and taught.

    This registry is the only place a rung is defined: the benchmark, the trainer's default, the reference
    check and the chapters all read it, so adding a rung is a one-place change.
    """

    name: str
    knobs: Knobs
    change: str  # the one change over the previous rung, as code
    why: str  # why it should be faster, in a sentence
    chapter: int  # the book chapter that teaches it
    # The loss guard: |loss - fp32 loss| <= atol + rtol * fp32 loss after the same steps from the same weights.
    # bf16, TF32, compiled kernels and flash attention only round differently, which moves the loss after a few
    # dozen steps by hundredths at most; a broken rung (not training, wrong mask, overflow) moves it by tenths.
    guard_atol: float = 0.02
    guard_rtol: float = 0.02
    batch: int | None = None  # a micro-batch size of its own; None: the ladder's
    # May the trainer default to it? Only if it is correct for long runs, not just for a benchmark's steps.
    trainer_safe: bool = True
    # Device types it runs on but was measured slower on than the rung before it: the trainer's default stops
    # short of it there (the ladder still times it everywhere).
    slower_on: tuple[str, ...] = ()


def _ladder(*steps: tuple) -> dict[str, Rung]:
    """Each rung is the previous rung's knobs (and batch) plus one change: (name, knob changes, code, why,
    chapter) and, optionally, a dict of the Rung's own settings (guard tolerances; a batch, kept from then on)."""
    rungs, knobs, batch = {}, Knobs(), None
    for name, change, code, why, chapter, *own in steps:
        knobs = replace(knobs, **change)
        own = dict(own[0]) if own else {}
        batch = own.pop("batch", batch)
        rungs[name] = Rung(name, knobs, code, why, chapter, batch=batch, **own)
    return rungs


RUNGS: dict[str, Rung] = _ladder(
    ("fp32", {}, "the baseline: every matmul in full float32",
     "nothing yet: the reference every other rung is timed and checked against", 4),
    ("tf32", {"matmul_precision": "high"}, 'torch.set_float32_matmul_precision("high")',
     "float32 matmuls may round their inputs to TF32 (10-bit mantissa) and run on tensor cores", 5),
    ("bf16", {"autocast": "bf16"}, "torch.autocast(device_type, dtype=torch.bfloat16)",
     "matmuls read and write half as many bytes and run at the bf16 tensor-core rate; weights stay fp32", 6),
    ("compile", {"compile": True}, "model = torch.compile(model)",
     "element-wise operations fuse into few kernels, so activations make fewer round trips to memory", 7),
    ("flash", {"attn": "flash"}, "F.scaled_dot_product_attention(q, k, v, is_causal=True)",
     "attention in tiles that stay on chip: the T x T score matrix is never written to memory", 8),
    ("vocab50304", {"pad_vocab": True}, "vocab_size = 50304  # 393 * 128",
     "matmul kernels work in tiles of powers of two; a 50,257-wide head leaves a ragged last tile", 9),
    ("fused_adamw", {"fused_adamw": True}, "torch.optim.AdamW(params, fused=True)",
     "one kernel updates every parameter instead of a handful of kernels per tensor", 10),
    # Past the video (chapter 14).
    # max_autotune on a CPU: chapter 14 at smoke scale on the 2-core development machine (AMD EPYC, torch
    # 2.13.0+cpu, 2026-11-26) measured 862 ms/step against fused_ce's 21.6 (results/past-the-video-smoke-cpu.txt);
    # at cpu scale 19.8 s against 12.8 s under heavy load.
    ("fused_ce", {"loss": "chunked"}, "loss = chunked_cross_entropy(x, lm_head.weight, targets)",
     "the head and the loss run in chunks of rows: the (B*T x vocab) logits, their float32 copy and their "
     "gradient never exist whole, which saves memory traffic and makes room for a bigger batch", 14),
    # Not "max-autotune": that mode also records CUDA graphs, which pay off when kernel launches dominate; at
    # B=16-64, T=1024 GPT-2's step is large matmuls, and CUDA graphs would keep a memory pool of their own (against
    # batch64), re-record for the trainer's eval shapes and forbid reading a step's outputs after the next step.
    ("max_autotune", {"compile_mode": "max-autotune-no-cudagraphs"},
     'model = torch.compile(model, mode="max-autotune-no-cudagraphs")',
     "at compile time inductor benchmarks several kernels (Triton templates, cuBLAS) for each matmul shape "
     "and keeps the fastest", 14, {"slower_on": ("cpu",)}),
    # A benchmark setting, not a trainer default: the trainer has its own --batch-size.
    ("batch64", {}, "B = 64  # the video's final micro-batch",
     "four times the rows per matmul for the same weights read: the memory fused_ce frees buys fuller kernels "
     "and a quarter of the per-step overhead per token", 14, {"batch": 64, "trainer_safe": False}),
    # e4m3 keeps 3 mantissa bits to bf16's 7, so its rounding is 16x coarser (torchao scales each tensor so its
    # largest value fits). Not yet measured on fp8 hardware by this project: the guard is widened by half (the
    # bf16 guard's 0.02 + 0.02 * loss, about 0.16 at loss 7, becomes 0.03 + 0.03 * loss, about 0.24), still
    # below what a broken rung moves the loss by (tenths to whole units).
    ("fp8", {"fp8": True}, "convert_to_float8_training(model.transformer.h)  # torchao",
     "the blocks' Linear layers multiply in float8 on fp8 tensor cores, at twice the bf16 rate", 14,
     # opt-in for training until its loss curve has been compared with bf16's over a real run
     {"guard_atol": 0.03, "guard_rtol": 0.03, "trainer_safe": False}),
)
# The video's ladder (chapters 4-10): what `--rungs video` times; "all" adds the rungs past the video.
VIDEO_RUNGS = tuple(name for name, rung in RUNGS.items() if rung.chapter <= 10)
# Views of the registry's `trainer_safe` and `slower_on` fields, for reading: the rungs the trainer may default
# to, and per device type the rungs measured slower there.
TRAINER_SAFE = tuple(name for name, rung in RUNGS.items() if rung.trainer_safe)
SLOWER_ON: dict[str, tuple[str, ...]] = {
    device: tuple(name for name, rung in RUNGS.items() if device in rung.slower_on)
    for device in sorted({d for rung in RUNGS.values() for d in rung.slower_on})
}
# The trainer's rung unless told otherwise: "auto", resolved by `resolve_rung` once the device is known.
DEFAULT_RUNG = "auto"


def default_rung(device: torch.device | str) -> str:
    """The one rule for the trainer's default: the last trainer-safe rung on the ladder that this device runs
    (no unsupported reason) and that is not known to be slower on this device type. `resolve_rung("auto")` and
    `fastest_for` both start from it."""
    device = torch.device(device)
    best = "fp32"
    for name, rung in RUNGS.items():
        if rung.trainer_safe and device.type not in rung.slower_on and unsupported_reason(rung.knobs, device) is None:
            best = name
    return best


def resolve_rung(name: str, device: torch.device | str) -> str:
    """A rung name as given, or for "auto" the fastest trainer-safe rung of this device (`default_rung`)."""
    return default_rung(device) if name == "auto" else get_rung(name).name


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """The "nice number" trick: CUDA kernels work in tiles of powers of two, so an ugly 50257-wide matmul
    runs slower than a 50304-wide one that does strictly more work. The extra rows are never a target,
    so training pushes their logits towards -inf and nothing else changes."""
    return -(-vocab_size // multiple) * multiple


def get_rung(name: str) -> Rung:
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
    if knobs.loss == "liger":
        if device.type != "cuda":
            return "Liger-Kernel's fused cross-entropy is a Triton kernel for NVIDIA GPUs"
        if not _installed("liger_kernel"):
            return f"Liger-Kernel is not installed: {FAST_EXTRA}"
    if knobs.fp8:
        return fp8_unavailable_reason(device)
    return None


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def fp8_unavailable_reason(device: torch.device) -> str | None:
    """float8 training needs fp8 tensor cores (compute capability 8.9+: L4, L40S, RTX 40xx, H100, H200) and torchao."""
    if device.type != "cuda":
        return "float8 matmuls need an NVIDIA GPU with fp8 tensor cores (compute capability 8.9+, e.g. H100)"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        return (f"this GPU (compute capability {capability[0]}.{capability[1]}) has no fp8 tensor cores; "
                "float8 matmuls need 8.9+ (L4, L40S, RTX 40xx, H100, H200)")
    if not _installed("torchao"):
        return f"torchao (float8 training) is not installed: {FAST_EXTRA}"
    return None


def fp8_filter(module: torch.nn.Module, fqn: str) -> bool:
    """Which Linear layers become float8: the transformer blocks' (dimensions multiples of 16, as fp8 kernels
    need), not the output head, whose weight is tied to the embedding and which fused_ce reads directly."""
    if not isinstance(module, torch.nn.Linear) or not fqn.startswith("transformer.h."):
        return False
    out_features, in_features = module.weight.shape
    return out_features % 16 == 0 and in_features % 16 == 0


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
    optimizer: torch.optim.Optimizer | MuonAdamW  # MuonAdamW when optim.muon (the recipes' `muon` idea)
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
    config = replace(config, attn=knobs.attn, vocab_size=vocab, loss=knobs.loss)
    if seed is not None:
        torch.manual_seed(seed)
    raw = GPT(config).to(device)
    if knobs.fp8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(raw, module_filter_fn=fp8_filter)  # in place; names and state_dict unchanged
    optimizer, report = make_optimizer(raw, optim, fused=knobs.fused_adamw, device_type=device.type)
    model: torch.nn.Module = raw
    if knobs.compile:
        model = torch.compile(model, mode=knobs.compile_mode)
    if ddp_local_rank is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[ddp_local_rank] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type) if knobs.autocast == "fp16" else None
    return Built(knobs, raw, model, optimizer, report, device, scaler)


def fastest_for(device: torch.device | str, allow_compile: bool = True) -> tuple[Knobs, list[str]]:
    """The trainer's default rung for this device (`default_rung`) with each knob this device cannot use well
    (or, for compile, that the caller rules out) turned off, plus one note per knob turned off saying why."""
    from gpt2lab.base.hardware import cpu_bf16_native

    device = torch.device(device)
    knobs, notes = RUNGS[default_rung(device)].knobs, []
    if knobs.autocast == "bf16":
        if device.type == "cpu" and not cpu_bf16_native():
            knobs, notes = replace(knobs, autocast="none"), notes + ["bf16 off: this CPU has no bf16 instructions"]
        elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
            knobs, notes = replace(knobs, autocast="none"), notes + ["bf16 off: this GPU has no bf16 support"]
    if knobs.compile:
        reason = compile_unavailable_reason(device) or (None if allow_compile else "not wanted by the caller")
        if reason:
            knobs, notes = replace(knobs, compile=False), notes + [f"compile off: {reason}"]
    return knobs, notes
