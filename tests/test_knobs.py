"""Each speed knob really takes effect, and the ladder climbs one change at a time."""

import shutil
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.engine.knobs import (RUNGS, SLOWER_ON, TRAINER_SAFE, Knobs, build, default_rung, fp8_filter, get_rung, matmul_precision,
                           padded_vocab_size, unsupported_reason)
from gpt2lab.engine.model import get_config
from gpt2lab.engine.optim import fused_supported
from gpt2lab.engine.step import train_step

CFG = get_config("test")


def one_step(built):
    x = torch.randint(0, CFG.vocab_size, (2, 8))
    return train_step(built, lambda: (x, x))


def test_ladder_order_and_one_change_per_rung():
    assert list(RUNGS) == ["fp32", "tf32", "bf16", "compile", "flash", "vocab50304", "fused_adamw",
                           "fused_ce", "max_autotune", "batch64", "fp8"]
    assert RUNGS["fp32"].knobs == Knobs()
    names = list(RUNGS)
    for prev, cur in zip(names, names[1:]):
        changed = [f.name for f in fields(Knobs) if getattr(RUNGS[prev].knobs, f.name) != getattr(RUNGS[cur].knobs, f.name)]
        if RUNGS[prev].batch != RUNGS[cur].batch:
            changed.append("batch")
        assert len(changed) == 1, f"{prev} -> {cur} changes {changed}"
    assert RUNGS["fused_adamw"].knobs == Knobs("high", "bf16", True, None, "flash", True, True)
    assert [RUNGS[n].chapter for n in names[7:]] == [14] * 4  # past the video: one chapter


def test_new_rungs_knobs_batch_and_guards():
    assert RUNGS["fused_ce"].knobs.loss == "chunked"
    assert RUNGS["max_autotune"].knobs.compile_mode == "max-autotune-no-cudagraphs"
    assert [RUNGS[n].batch for n in RUNGS] == [None] * 9 + [64, 64]  # batch64 and every rung after it
    assert RUNGS["fp8"].knobs.fp8 and RUNGS["fp8"].batch == 64
    bf16 = RUNGS["bf16"]
    assert RUNGS["fp8"].guard_rtol > bf16.guard_rtol and RUNGS["fp8"].guard_atol > bf16.guard_atol
    assert all((RUNGS[n].guard_atol, RUNGS[n].guard_rtol) == (0.02, 0.02) for n in RUNGS if n != "fp8")


def test_fused_ce_builds_a_model_that_returns_no_logits_with_targets():
    built = build(RUNGS["fused_ce"].knobs, CFG, "cpu", seed=0)
    assert built.raw.config.loss == "chunked"
    x = torch.randint(0, CFG.vocab_size, (2, 8))
    logits, loss = built.raw(x, x)
    assert logits is None and torch.isfinite(loss)
    assert built.raw(x)[0].shape == (2, 8, CFG.vocab_size)


def test_fp8_skip_reasons(monkeypatch):
    import gpt2lab.engine.knobs as knobs_mod

    knobs = RUNGS["fp8"].knobs
    assert "fp8 tensor cores" in unsupported_reason(replace(knobs, compile=False), "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(knobs_mod, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100
    assert "compute capability 8.0" in unsupported_reason(knobs, "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    monkeypatch.setattr(knobs_mod, "_installed", lambda module: False)
    assert "gpt2lab[fast]" in unsupported_reason(knobs, "cuda")
    monkeypatch.setattr(knobs_mod, "_installed", lambda module: True)
    assert unsupported_reason(knobs, "cuda") is None


def test_liger_loss_is_skipped_with_the_extra_named(monkeypatch):
    import gpt2lab.engine.knobs as knobs_mod

    liger = Knobs(loss="liger")
    assert "NVIDIA" in unsupported_reason(liger, "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(knobs_mod, "_installed", lambda module: False)
    assert "gpt2lab[fast]" in unsupported_reason(liger, "cuda")


def test_fp8_converts_the_block_linears_only():
    """The filter torchao's convert_to_float8_training is given: every block Linear, not the tied head."""
    from gpt2lab.engine.model import GPT

    with torch.device("meta"):
        model = GPT(get_config("cpu-small"))
    chosen = [name for name, m in model.named_modules() if fp8_filter(m, name)]
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in linears and "lm_head" not in chosen
    assert chosen == [n for n in linears if n.startswith("transformer.h.")] and len(chosen) == 4 * 4
    assert not fp8_filter(torch.nn.Linear(24, 40), "transformer.h.0.mlp.c_fc")  # not multiples of 16


def test_default_rung_is_the_last_supported_trainer_safe_rung(monkeypatch):
    import gpt2lab.engine.knobs as knobs_mod

    # the registry's own fields, read back through the views the chapters print
    assert TRAINER_SAFE == ("fp32", "tf32", "bf16", "compile", "flash", "vocab50304", "fused_adamw", "fused_ce",
                            "max_autotune")
    assert [n for n, r in RUNGS.items() if not r.trainer_safe] == ["batch64", "fp8"]
    assert SLOWER_ON == {"cpu": ("max_autotune",)} and RUNGS["max_autotune"].slower_on == ("cpu",)
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler:
        assert default_rung("cpu") == "fused_ce"  # max_autotune runs on a CPU but was measured slower there
        # the rule reads the fields: a max_autotune not measured slower on CPUs becomes the CPU default
        unslowed = dict(RUNGS, max_autotune=replace(RUNGS["max_autotune"], slower_on=()))
        monkeypatch.setattr(knobs_mod, "RUNGS", unslowed)
        assert default_rung("cpu") == "max_autotune"
        # and a rung marked unsafe for training is never the default, even where it runs
        monkeypatch.setattr(knobs_mod, "RUNGS", dict(unslowed, max_autotune=replace(RUNGS["max_autotune"], trainer_safe=False)))
        assert default_rung("cpu") == "fused_ce"
        monkeypatch.setattr(knobs_mod, "RUNGS", RUNGS)
    monkeypatch.setattr(knobs_mod, "compile_unavailable_reason", lambda device: "no compiler")
    assert default_rung("cpu") == "bf16"  # without a compiler: the last rung before compile
    monkeypatch.setattr(knobs_mod, "unsupported_reason", lambda knobs, device: "nothing runs")
    assert default_rung("cpu") == "fp32"


def test_unknown_rung_and_bad_knob_values():
    with pytest.raises(ValueError, match="fp32 -> tf32"):
        get_rung("fp4")
    with pytest.raises(ValueError, match="loss"):
        Knobs(loss="fused")
    with pytest.raises(ValueError, match="autocast"):
        Knobs(autocast="int8")
    with pytest.raises(ValueError, match="matmul_precision"):
        Knobs(matmul_precision="medium")


def test_matmul_precision_is_set_then_restored():
    before = torch.get_float32_matmul_precision()
    with matmul_precision(RUNGS["tf32"].knobs):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.parametrize("rung, dtype", [("tf32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_dtype_seen_inside_forward(rung, dtype):
    built = build(get_rung(rung).knobs, CFG, "cpu", seed=0)
    seen = []
    built.raw.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    result = one_step(built)
    assert seen == [dtype]
    assert torch.isfinite(result.loss)
    assert built.raw.lm_head.weight.dtype == torch.float32  # autocast leaves the master weights in fp32


def test_fp16_gets_a_grad_scaler():
    assert build(Knobs(autocast="fp16"), CFG, "cpu").scaler is not None
    assert build(RUNGS["bf16"].knobs, CFG, "cpu").scaler is None


@pytest.mark.parametrize("rung, calls", [("bf16", 0), ("flash", CFG.n_layer)])
def test_flash_attention_calls_sdpa(monkeypatch, rung, calls):
    # flash is compiled in the ladder; test the attention knob alone, eagerly, so the spy sees Python calls
    knobs = Knobs(attn=get_rung(rung).knobs.attn)
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
        padded = build(RUNGS["vocab50304"].knobs, get_config("gpt2"), "meta").raw
        plain = build(RUNGS["flash"].knobs, get_config("gpt2"), "meta").raw
    assert padded.lm_head.weight.shape == (50304, 768) and padded.config.vocab_size == 50304
    assert padded.transformer.wte.weight is padded.lm_head.weight
    assert plain.lm_head.weight.shape == (50257, 768)


def torch_steps_a_fused_cpu_adamw() -> bool:
    """Whether this torch really has a fused AdamW for CPU tensors: build one and take a step (torch refuses
    `fused=True` for a device it has no fused kernel for)."""
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    try:
        torch.optim.AdamW([p], lr=0.1, fused=True).step()
    except RuntimeError:
        return False
    return bool((p < 1).all())


def test_fused_adamw_flag():
    works = torch_steps_a_fused_cpu_adamw()  # a fact about this torch, not read through the helper under test
    assert fused_supported("cpu") is works
    fused = build(RUNGS["fused_adamw"].knobs, CFG, "cpu")
    assert fused.optimizer.defaults["fused"] is works
    assert fused.decay_report.fused is works
    one_step(fused)  # and the optimizer it built steps
    assert not build(RUNGS["vocab50304"].knobs, CFG, "cpu").optimizer.defaults["fused"]


def test_compile_wraps_the_model():
    compiled = build(RUNGS["compile"].knobs, CFG, "cpu")  # lazy: nothing compiles until the first call
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.model._orig_mod is compiled.raw
    eager = build(RUNGS["bf16"].knobs, CFG, "cpu")
    assert eager.model is eager.raw


def test_unsupported_reasons(monkeypatch):
    assert "GPU" in unsupported_reason(Knobs(autocast="fp16"), "cpu")
    assert unsupported_reason(RUNGS["bf16"].knobs, "cpu") is None
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in unsupported_reason(RUNGS["compile"].knobs, "cpu")
    assert unsupported_reason(RUNGS["tf32"].knobs, "cpu") is None


FAULTS = """
import resource, sys, torch
from gpt2lab.engine.knobs import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 1024 * 1024)  # 64 MiB: above glibc's mmap threshold
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[4:]))
"""


@pytest.mark.slow
def test_keep_freed_memory_stops_most_page_faults_on_reallocation():
    import platform
    import subprocess
    import sys

    from gpt2lab.engine.knobs import keep_freed_memory

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


def test_the_registry_defines_each_rung_once_with_its_lesson():
    from gpt2lab.run.config import TrainConfig
    from gpt2lab.engine.knobs import DEFAULT_RUNG

    chapters = [r.chapter for r in RUNGS.values()]
    assert chapters == sorted(chapters) and chapters[0] == 4  # the rung chapters follow the ladder's order
    for name, rung in RUNGS.items():
        assert rung.name == name and rung.change and rung.why
        assert rung.guard_atol > 0 and rung.guard_rtol > 0
    assert DEFAULT_RUNG == "auto" and TrainConfig().rung == DEFAULT_RUNG


def test_resolve_rung():
    from gpt2lab.engine.knobs import resolve_rung

    assert resolve_rung("auto", "cpu") == default_rung("cpu")
    assert resolve_rung("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown rung"):
        resolve_rung("warp", "cpu")


def test_fastest_for_keeps_what_the_device_supports(monkeypatch):
    from gpt2lab.base import hardware as bench
    from gpt2lab.engine.knobs import fastest_for

    FASTEST = RUNGS[default_rung("cpu")].knobs

    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: ["avx512_bf16"])
    knobs, notes = fastest_for("cpu", allow_compile=False)
    assert knobs.autocast == "bf16" and not knobs.compile and knobs.attn == FASTEST.attn
    assert notes == ["compile off: not wanted by the caller"]
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: [])
    knobs, notes = fastest_for("cpu", allow_compile=False)
    assert knobs.autocast == "none" and notes[0] == "bf16 off: this CPU has no bf16 instructions"
