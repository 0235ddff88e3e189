"""Hardware record, device choice, datasheet peaks and the measured probes."""

import pytest
import torch

from gpt2lab.base import hardware
from gpt2lab.base.hardware import hardware_record, peak_flops

@pytest.mark.parametrize(
    "name, dtype, tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5),
        ("NVIDIA H100 PCIe", "bf16", 756.5),
        ("NVIDIA H200", "tf32", 494.5),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156),
        ("NVIDIA A100-SXM4-40GB", "fp32", 19.5),
        ("NVIDIA A10", "bf16", 125),  # not mistaken for an A100
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
        ("Tesla V100-SXM2-16GB", "bf16", None),  # no bf16 on Volta
        ("AMD EPYC", "fp32", None),
    ],
)
def test_peak_flops_lookup(name, dtype, tflops):
    peak = peak_flops(name, dtype)
    assert peak == (tflops * 1e12 if tflops else None)


def test_hardware_record():
    hw = hardware_record("cpu")
    assert hw["device"] == "cpu" and hw["device_name"] and hw["cpu_count"] >= 1
    assert hw["torch_threads"] == torch.get_num_threads() and hw["torch"] == torch.__version__


def test_hardware_record_reports_cpu_bf16_support(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n")
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda p: real_path(info) if p == "/proc/cpuinfo" else real_path(p))
    assert hardware.cpu_bf16_instructions() == ["avx512_bf16"]
    record = hardware.hardware_record("cpu")
    assert record["cpu"] == "Test CPU" and record["cpu_bf16"] == ["avx512_bf16"]
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert hardware.cpu_bf16_instructions() == []
    info.unlink()  # no /proc/cpuinfo (macOS, Windows): unknown
    assert hardware.cpu_bf16_instructions() is None and hardware.cpu_bf16_native() is False


@pytest.mark.parametrize("instructions, native", [(["amx_bf16", "avx512_bf16"], True), ([], False), (None, False)])
def test_every_bf16_choice_reads_the_cpu_the_same_way(monkeypatch, instructions, native):
    """Unknown counts as no bf16 everywhere: the book's cpu scale, the full run's knobs and the head's dtype."""
    from gpt2lab.engine.knobs import fastest_for
    from gpt2lab.lessons.scale import pick_scale
    from gpt2lab.lessons.vocab import fast_dtype

    monkeypatch.setattr(hardware, "cpu_bf16_instructions", lambda: instructions)
    assert hardware.cpu_bf16_native() is native
    assert ("autocast" not in pick_scale({"GPT2LAB_SCALE": "cpu"}).train_overrides) is native
    assert (fastest_for("cpu", allow_compile=False)[0].autocast == "bf16") is native
    assert (fast_dtype("cpu") == torch.bfloat16) is native




def test_best_peak_and_bandwidth_lookup():
    assert hardware.best_peak_flops("NVIDIA H200") == 989.5e12
    assert hardware.best_peak_flops("Tesla V100-SXM2-16GB") == 125e12  # fp16 tensor cores, no bf16
    assert hardware.best_peak_flops("AMD EPYC") is None
    assert hardware.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert hardware.peak_bandwidth("NVIDIA A100-SXM4-40GB") == 1.555e12


@pytest.mark.parametrize("name, message", [("tpu9", "unknown device"), ("cuda:7", "CUDA"), ("meta", "runs on cpu, cuda or mps")])
def test_resolve_device_errors_name_the_flag(name, message):
    from gpt2lab.base.errors import UserError

    if torch.cuda.is_available() and name.startswith("cuda"):
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=f"--device {name}: .*{message}"):
        hardware.resolve_device(name)
    assert hardware.resolve_device(None).type in ("cpu", "cuda")
    assert hardware.resolve_device("cpu").type == "cpu"


def test_measured_probes_are_plausible():
    # 2 * 256**3 FLOPs and a 64 MiB copy: positive and finite, and below any CPU's reach of 100 TFLOP/s
    flops = hardware.matmul_flops("fp32", 256, "cpu", steps=3, warmup=1)
    assert 1e8 < flops < 1e14
    bandwidth = hardware.copy_bandwidth(64 * 2**20, "cpu", steps=3, warmup=1)
    assert 1e8 < bandwidth < 1e13
    assert hardware.supported_dtypes("cpu") == ["fp32", "bf16"]
    with pytest.raises(ValueError):
        hardware.matmul_flops("int4", 8, "cpu")
