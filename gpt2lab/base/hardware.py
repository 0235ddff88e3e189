"""What machine is this, and what can it do? Device choice, the hardware record, datasheet peaks, and
measured probes (matmul throughput per dtype, memory bandwidth) so that "peak" is a number measured here.

A timing means nothing without the machine it was taken on, so every result file carries `hardware_record`.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2lab.base.errors import UserError


# ---------------------------------------------------------------------------------------------- the device


def resolve_device(name: str | None, option: str = "--device") -> torch.device:
    """`name` as a usable torch.device (None or "auto": cuda, then mps, then cpu), or a UserError naming the
    flag. The same rules as every other command (`gpt2lab.base.dist.device_problem`)."""
    from gpt2lab.base.dist import device_problem, pick_device

    problem = device_problem(name or "auto")
    if problem:
        raise UserError(f"{option} {name}: {problem}")
    return pick_device(name or "auto")


# ----------------------------------------------------------------------------------------------- the record


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_bf16_instructions() -> list[str] | None:
    """The CPU's native bf16 instruction sets (Linux only; None where unknown). Without any, bf16 autocast
    on the CPU converts in software and is expected to be slower than fp32; with them it may not be."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    return sorted(f for f in flags.split() if f in ("avx512_bf16", "amx_bf16", "avx_ne_convert"))


def cpu_bf16_native() -> bool:
    """Does this CPU do bf16 arithmetic natively? The one reading of `cpu_bf16_instructions` that choices use.

    Unknown (not Linux) counts as no: fp32 is correct everywhere, and bf16 emulated in software is slower than
    fp32, so bf16 is chosen only where the instructions are seen."""
    return bool(cpu_bf16_instructions())


def hardware_record(device: torch.device | str) -> dict:
    """What a timing means nothing without: device, software versions, CPU and thread count."""
    device = torch.device(device)
    record = {
        "device": device.type,
        "device_name": cpu_model(),
        "cpu": cpu_model(),
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


# --------------------------------------------------------------------------------------- datasheet peaks

# Dense peak TFLOP/s per dtype from NVIDIA's datasheets and architecture whitepapers (their tensor-core
# figures "with sparsity" halved). fp32 runs on the plain CUDA cores; tf32/bf16/fp16/fp8 on the tensor cores
# (GeForce cards: with fp32 accumulation, which is what autocast uses). First matching pattern wins.
_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H[12]00.*NVL", {"fp32": 60, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5, "fp8": 1670.5}),
    (r"H100.*PCIe", {"fp32": 51, "tf32": 378, "bf16": 756.5, "fp16": 756.5, "fp8": 1513}),
    (r"H[12]00", {"fp32": 67, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5, "fp8": 1979}),  # SXM
    (r"A100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    (r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}),
    (r"L40S", {"fp32": 91.6, "tf32": 183, "bf16": 362, "fp16": 362, "fp8": 733}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121, "fp8": 242.5}),
    (r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    (r"RTX 3090", {"fp32": 35.6, "tf32": 35.6, "bf16": 71, "fp16": 71}),
    (r"V100", {"fp32": 15.7, "tf32": 15.7, "fp16": 125}),  # no TF32 units (matmuls stay fp32), no bf16
    (r"\bT4\b", {"fp32": 8.1, "tf32": 8.1, "fp16": 65}),  # likewise
]

# HBM bandwidth in GB/s from the same datasheets, for the roofline's memory roof.
_PEAK_BANDWIDTH_GBS: list[tuple[str, float]] = [
    (r"H200", 4800), (r"H100.*PCIe", 2000), (r"H100", 3350), (r"A100.*40GB", 1555), (r"A100", 2039),
    (r"\bA10\b", 600), (r"L40S", 864), (r"\bL4\b", 300), (r"RTX 4090", 1008), (r"RTX 3090", 936),
    (r"V100", 900), (r"\bT4\b", 320),
]


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Datasheet peak FLOP/s of a known GPU for matmuls in `dtype` (fp32|tf32|bf16|fp16|fp8), else None."""
    for pattern, peaks in _PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peaks[dtype] * 1e12 if dtype in peaks else None
    return None


def best_peak_flops(device_name: str) -> float | None:
    """The device's best dense 16-bit tensor-core peak: one yardstick for every rung (fp8 is a rung of its own)."""
    peaks = [p for p in (peak_flops(device_name, d) for d in ("bf16", "fp16")) if p]
    return max(peaks) if peaks else None


def peak_bandwidth(device_name: str) -> float | None:
    """Datasheet memory bandwidth of a known GPU in bytes/s, else None."""
    for pattern, gbs in _PEAK_BANDWIDTH_GBS:
        if re.search(pattern, device_name):
            return gbs * 1e9
    return None


# ----------------------------------------------------------------------------------------- measured probes

PROBE_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_flops(dtype: str, n: int, device: torch.device | str, steps: int = 10, warmup: int = 2) -> float:
    """Measured FLOP/s of one n x n x n matmul in `dtype` on `device` (tf32: fp32 with TF32 allowed).

    A large square matmul is the friendliest workload a device has, so this is the practical ceiling that
    model FLOP utilization is measured against. A ceiling is the best call, not the median: on a shared
    machine other processes only ever slow a call down.
    """
    from gpt2lab.base.timing import measure

    device = torch.device(device)
    if dtype not in PROBE_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(PROBE_DTYPES)}, got {dtype!r}")
    a = torch.randn(n, n, device=device).to(PROBE_DTYPES[dtype])
    b = torch.randn(n, n, device=device).to(PROBE_DTYPES[dtype])
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        m = measure(lambda: a @ b, device, steps=steps, warmup=warmup)
    finally:
        torch.set_float32_matmul_precision(before)
    return 2 * n**3 / (m.min_ms / 1000)


def copy_bandwidth(nbytes: int, device: torch.device | str, steps: int = 10, warmup: int = 2) -> float:
    """Measured bytes/s of copying one large buffer into another (each byte read once and written once), from
    the best call: a ceiling, like `matmul_flops`."""
    from gpt2lab.base.timing import measure

    device = torch.device(device)
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    m = measure(lambda: dst.copy_(src), device, steps=steps, warmup=warmup)
    return 2 * src.numel() * 4 / (m.min_ms / 1000)


def supported_dtypes(device: torch.device | str) -> list[str]:
    """The matmul dtypes worth probing on this device: fp16 and tf32 only where there are units for them."""
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        dtypes = ["fp32", "fp16"] + (["tf32", "bf16"] if major >= 8 else [])
        return [d for d in PROBE_DTYPES if d in dtypes]
    return ["fp32", "bf16"]  # CPUs: tf32 is the same arithmetic as fp32; fp16 matmuls fall back to slow paths


# ------------------------------------------------------------------------------------ the GPU, inside

_V100_WP = "NVIDIA Tesla V100 GPU Architecture whitepaper (WP-08608-001, 2017): SXM2 table, 'Tensor Cores' section"
_A100_WP = ("NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020): 'A100 SM Architecture' and comparison "
            "table; A100 80GB datasheet (2021) for HBM2e size and bandwidth")
_H100_WP = ("NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022): 'H100 SM Architecture' and comparison "
            "table; H100 datasheet for SXM5 HBM3 size and bandwidth")
_H200_DS = "NVIDIA H200 Tensor Core GPU datasheet (2024): 141 GB HBM3e at 4.8 TB/s; the SM is Hopper's (GH100), as H100 SXM5"
_PTX = "NVIDIA PTX ISA (8.x), 'Warp-level matrix multiply-accumulate' (mma) and 'Asynchronous warpgroup level MMA' (wgmma)"


@dataclass(frozen=True)
class MmaShape:
    """One tensor-core matrix instruction: D (m x n) = A (m x k) @ B (k x n) + C, with fp32 accumulation."""

    instruction: str  # as PTX names it
    dtype: str  # input format
    m: int
    n: int
    k: int
    threads: int  # threads that issue it together (a warp is 32, a Hopper warpgroup 128)
    source: str

    @property
    def fmas(self) -> int:
        """Multiply-adds one instruction performs: m * n outputs, each a sum of k products."""
        return self.m * self.n * self.k


@dataclass(frozen=True)
class GpuAnatomy:
    """What the video's GPU talk names, per GPU, from NVIDIA's whitepapers and datasheets (`sources`)."""

    name: str
    sms: int
    tensor_cores_per_sm: int
    registers_kib_per_sm: int  # 64K 32-bit registers on all three
    shared_kib_per_sm: int  # the most shared memory one SM can be configured to give its blocks
    l1_shared_kib_per_sm: int  # L1 data cache and shared memory together
    l2_mib: int
    hbm_gb: int
    hbm_gbs: float  # HBM bandwidth, GB/s
    mma: tuple[MmaShape, ...]
    sources: tuple[str, ...]
    boost_mhz: int | None = None  # the clock the datasheet's peak FLOP/s are computed at, where the source states it

    @property
    def tensor_cores(self) -> int:
        return self.sms * self.tensor_cores_per_sm

    def levels(self) -> list[tuple[str, float]]:
        """(memory level, bytes on the whole chip), fastest and smallest first."""
        return [("registers", self.sms * self.registers_kib_per_sm * 1024),
                ("shared memory / L1", self.sms * self.l1_shared_kib_per_sm * 1024),
                ("L2 cache", self.l2_mib * 2**20), ("HBM", self.hbm_gb * 1e9)]


_VOLTA_MMA = (MmaShape("tensor core op (per core, per clock); PTX mma.m8n8k4 per warp", "fp16", 4, 4, 4, 1, _V100_WP),)
_AMPERE_MMA = (MmaShape("mma.sync.aligned.m16n8k8", "tf32", 16, 8, 8, 32, _PTX),
               MmaShape("mma.sync.aligned.m16n8k16", "bf16", 16, 8, 16, 32, _PTX))
_HOPPER_MMA = (MmaShape("wgmma.mma_async m64nNk8 (N up to 256)", "tf32", 64, 256, 8, 128, _PTX),
               MmaShape("wgmma.mma_async m64nNk16 (N up to 256)", "bf16", 64, 256, 16, 128, _PTX),
               *_AMPERE_MMA)

GPU_ANATOMY: dict[str, GpuAnatomy] = {
    "V100 SXM2": GpuAnatomy("V100 SXM2", 80, 8, 256, 96, 128, 6, 32, 900, _VOLTA_MMA, (_V100_WP,), 1530),
    "A100 SXM4 80GB": GpuAnatomy("A100 SXM4 80GB", 108, 4, 256, 164, 192, 40, 80, 2039, _AMPERE_MMA, (_A100_WP, _PTX), 1410),
    "H100 SXM5": GpuAnatomy("H100 SXM5", 132, 4, 256, 228, 256, 50, 80, 3350, _HOPPER_MMA, (_H100_WP, _PTX)),
    "H200 SXM": GpuAnatomy("H200 SXM", 132, 4, 256, 228, 256, 50, 141, 4800, _HOPPER_MMA, (_H100_WP, _H200_DS, _PTX)),
}
