"""Each speed knob really takes effect, and the ladder climbs one change at a time."""

import shutil
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.knobs import RUNGS, Knobs, build, get_rung, matmul_precision, padded_vocab_size, unsupported_reason
from gpt2lab.model import get_config
from gpt2lab.optim import fused_supported
from gpt2lab.step import train_step

CFG = get_config("test")


def one_step(built):
    x = torch.randint(0, CFG.vocab_size, (2, 8))
    return train_step(built, lambda: (x, x))


def test_ladder_order_and_one_change_per_rung():
    assert list(RUNGS) == ["fp32", "tf32", "bf16", "compile", "flash", "vocab50304", "fused_adamw"]
    assert RUNGS["fp32"] == Knobs()
    names = list(RUNGS)
    for prev, cur in zip(names, names[1:]):
        changed = [f.name for f in fields(Knobs) if getattr(RUNGS[prev], f.name) != getattr(RUNGS[cur], f.name)]
        assert len(changed) == 1, f"{prev} -> {cur} changes {changed}"
    assert RUNGS["fused_adamw"] == Knobs("high", "bf16", True, None, "flash", True, True)


def test_unknown_rung_and_bad_knob_values():
    with pytest.raises(ValueError, match="fp32 -> tf32"):
        get_rung("fp8")
    with pytest.raises(ValueError, match="autocast"):
        Knobs(autocast="int8")
    with pytest.raises(ValueError, match="matmul_precision"):
        Knobs(matmul_precision="medium")


def test_matmul_precision_is_set_then_restored():
    before = torch.get_float32_matmul_precision()
    with matmul_precision(RUNGS["tf32"]):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.parametrize("rung, dtype", [("tf32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_dtype_seen_inside_forward(rung, dtype):
    built = build(get_rung(rung), CFG, "cpu", seed=0)
    seen = []
    built.raw.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    result = one_step(built)
    assert seen == [dtype]
    assert torch.isfinite(result.loss)
    assert built.raw.lm_head.weight.dtype == torch.float32  # autocast leaves the master weights in fp32


def test_fp16_gets_a_grad_scaler():
    assert build(Knobs(autocast="fp16"), CFG, "cpu").scaler is not None
    assert build(RUNGS["bf16"], CFG, "cpu").scaler is None


@pytest.mark.parametrize("rung, calls", [("bf16", 0), ("flash", CFG.n_layer)])
def test_flash_attention_calls_sdpa(monkeypatch, rung, calls):
    # flash is compiled in the ladder; test the attention knob alone, eagerly, so the spy sees Python calls
    knobs = Knobs(attn=get_rung(rung).attn)
    real, count = F.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    one_step(build(knobs, CFG, "cpu", seed=0))
    assert len(count) == calls


def test_vocab_padding_gives_gpt2_50304_rows():
    assert padded_vocab_size(50257) == 50304
    assert padded_vocab_size(50304) == 50304
    with torch.device("meta"):  # the full 124M model, shapes only
        padded = build(RUNGS["vocab50304"], get_config("gpt2"), "meta").raw
        plain = build(RUNGS["flash"], get_config("gpt2"), "meta").raw
    assert padded.lm_head.weight.shape == (50304, 768) and padded.config.vocab_size == 50304
    assert padded.transformer.wte.weight is padded.lm_head.weight
    assert plain.lm_head.weight.shape == (50257, 768)


def test_fused_adamw_flag():
    fused = build(RUNGS["fused_adamw"], CFG, "cpu")
    assert fused.optimizer.defaults["fused"] is fused_supported("cpu")
    assert fused.decay_report.fused is fused_supported("cpu")
    assert not build(RUNGS["vocab50304"], CFG, "cpu").optimizer.defaults["fused"]


def test_compile_wraps_the_model():
    compiled = build(RUNGS["compile"], CFG, "cpu")  # lazy: nothing compiles until the first call
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.model._orig_mod is compiled.raw
    eager = build(RUNGS["bf16"], CFG, "cpu")
    assert eager.model is eager.raw


def test_unsupported_reasons(monkeypatch):
    assert "GPU" in unsupported_reason(Knobs(autocast="fp16"), "cpu")
    assert unsupported_reason(RUNGS["bf16"], "cpu") is None
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in unsupported_reason(RUNGS["compile"], "cpu")
    assert unsupported_reason(RUNGS["tf32"], "cpu") is None


FAULTS = """
import resource, sys, torch
from gpt2lab.knobs import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 1024 * 1024)  # 64 MiB: above glibc's mmap threshold
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[4:]))
"""


def test_keep_freed_memory_stops_most_page_faults_on_reallocation():
    import platform
    import subprocess
    import sys

    from gpt2lab.knobs import keep_freed_memory

    if platform.system() != "Linux":
        assert keep_freed_memory() is False
        return

    def run(mode):  # a fresh process each: malloc settings are process-wide
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
        kept, faults = out.stdout.split()
        return kept, int(faults)

    kept, with_keep = run("keep")
    _, default = run("default")
    assert kept == "True"
    assert default >= 4 * 16_000  # every 64 MiB allocation maps ~16,384 fresh pages
    assert with_keep <= default / 2, (with_keep, default)


def test_fastest_for_keeps_what_the_device_supports(monkeypatch):
    from gpt2lab import bench
    from gpt2lab.knobs import FASTEST, fastest_for

    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: ["avx512_bf16"])
    knobs, notes = fastest_for("cpu", allow_compile=False)
    assert knobs.autocast == "bf16" and not knobs.compile and knobs.attn == FASTEST.attn
    assert notes == ["compile off: not wanted by the caller"]
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: [])
    knobs, notes = fastest_for("cpu", allow_compile=False)
    assert knobs.autocast == "none" and notes[0] == "bf16 off: this CPU has no bf16 instructions"
