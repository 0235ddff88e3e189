"""The ladder harness: output shape and finiteness, skip reasons, the correctness guard, results files.
No timing thresholds: timings depend on the machine."""

import json
import math
import shutil

import pytest
import torch

from gpt2lab.measure import ladder as ladder_mod
from gpt2lab.measure.flops import flops_per_token
from gpt2lab.engine.knobs import RUNGS, Knobs
from gpt2lab.measure.ladder import run_ladder
from gpt2lab.measure.records import RungResult, append_jsonl, compare, load_jsonl, loss_guard, runs
from gpt2lab.engine.model import get_config
from gpt2lab.measure.report import format_table

TINY = dict(config="test", batch=2, seq=16, steps=2, warmup=1, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ladder():
    return run_ladder(["fp32", "tf32", "bf16"], peak_tflops=1.0, **TINY)


@pytest.mark.slow
def test_ladder_results_shape_and_finiteness(ladder):
    assert [r.rung for r in ladder] == ["fp32", "tf32", "bf16"]
    fpt = flops_per_token(get_config("test"), 16)
    for r in ladder:
        assert r.skipped is None and r.knobs == RUNGS[r.rung].knobs.__dict__
        assert len(r.step_ms) == 2 and all(math.isfinite(t) and t > 0 for t in r.step_ms)
        assert r.ms_min <= r.ms_median <= r.ms_max
        assert r.tokens_per_s == pytest.approx(2 * 16 / (r.ms_median / 1000))
        assert r.flops_per_token == fpt
        assert r.peak_tflops == 1.0 and r.mfu == pytest.approx(r.tokens_per_s * fpt / 1e12)
        assert r.first_step_s > 0 and r.warmup_s >= r.first_step_s
        assert r.peak_mem_mb > 0 and r.mem_kind
        assert math.isfinite(r.loss) and r.ref_loss == ladder[0].loss
        assert r.guard_ok is True
        assert r.hardware["device"] == "cpu" and r.hardware["torch"] == torch.__version__
        json.dumps(r.to_dict())  # a results line
    assert ladder[0].speedup == 1.0
    assert ladder[2].speedup == pytest.approx(ladder[0].ms_median / ladder[2].ms_median)
    # a fresh model on real text: the loss starts near ln(vocab) and training on one batch lowers it
    assert ladder[0].loss < math.log(512)
    table = format_table(ladder)
    assert all(s in table for s in ("fp32", "tf32", "bf16", "ms/step", "tokens/s", ladder[0].hardware["device_name"]))


@pytest.mark.slow
def test_skipped_rungs_are_recorded_with_reason(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler on this "machine"
    results = run_ladder(["fp32", ("fp16", Knobs(autocast="fp16")), "compile"], **TINY)
    assert [r.rung for r in results] == ["fp32", "fp16", "compile"]
    fp32, fp16, compiled = results
    assert fp32.skipped is None
    assert "GPU" in fp16.skipped and "C++ compiler" in compiled.skipped
    for r in (fp16, compiled):
        assert r.ms_median is None and r.loss is None and r.guard_ok is None and r.step_ms == []
    assert format_table(results).count("skipped") == 2


@pytest.mark.slow
def test_guard_reference_is_run_when_fp32_is_not_listed():
    (bf16,) = run_ladder(["bf16"], **TINY)
    assert bf16.ref_loss is not None and bf16.guard_ok is True
    assert bf16.speedup is None  # no timed fp32 rung to compare with


@pytest.mark.slow
def test_guard_flags_a_broken_rung(monkeypatch):
    real_build = ladder_mod.build

    def build_that_forgets_to_train_bf16(knobs, *args, **kwargs):
        built = real_build(knobs, *args, **kwargs)
        if knobs.autocast == "bf16":
            for group in built.optimizer.param_groups:
                group["lr"] = 0.0
        return built

    monkeypatch.setattr(ladder_mod, "build", build_that_forgets_to_train_bf16)
    fp32, tf32, bf16 = run_ladder(["fp32", "tf32", "bf16"], **dict(TINY, steps=4))
    assert tf32.guard_ok is True
    assert bf16.guard_ok is False and bf16.guard.startswith("FAIL")
    assert "CORRECTNESS GUARD FAILED for: bf16" in format_table([fp32, tf32, bf16])


def test_loss_guard():
    assert loss_guard(3.0, 3.0) == (True, "bit-identical to fp32")
    assert loss_guard(3.05, 3.0)[0] is True  # rounding-sized differences pass
    assert loss_guard(3.5, 3.0)[0] is False
    assert loss_guard(float("nan"), 3.0)[0] is False
    assert loss_guard(float("inf"), None)[0] is False
    assert loss_guard(3.0, None)[0] is None


@pytest.mark.slow
def test_compiled_rung_runs_and_matches_fp32():
    fp32, compiled = run_ladder(["fp32", "compile"], **dict(TINY, steps=1))
    assert compiled.skipped is None, compiled.skipped
    assert math.isfinite(compiled.ms_median) and compiled.first_step_s > 0
    assert compiled.guard_ok is True, compiled.guard


@pytest.mark.slow
def test_jsonl_round_trip(ladder, tmp_path):
    path = tmp_path / "results" / "ladder.jsonl"
    append_jsonl(path, ladder)
    append_jsonl(path, ladder[:1])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["hardware"]["device"] == "cpu" for line in lines)
    assert load_jsonl(path) == ladder + ladder[:1]


def test_compare_calls_a_difference_only_outside_the_noise():
    def rung(median, lo, hi):
        return RungResult(rung="x", knobs={}, config={}, preset=None, batch=1, seq=1, steps=3, warmup=0,
                          device="cpu", hardware={}, started="", ms_median=median, ms_min=lo, ms_max=hi)

    assert compare(rung(100, 95, 110), rung(50, 45, 60)) == (2.0, "faster")
    assert compare(rung(50, 45, 60), rung(100, 95, 110)) == (0.5, "slower")
    assert compare(rung(100, 90, 110), rung(95, 85, 105)) == (100 / 95, "within noise")


@pytest.mark.slow
def test_a_rung_with_its_own_batch_is_timed_and_guarded_at_that_batch():
    """batch64's case: the rung runs its own batch, its guard compares with fp32 at that batch (computed as
    gradient accumulation over the ladder's micro-batch), and speed-ups are per token."""
    from gpt2lab.engine.knobs import Rung

    big = Rung("bf16_b6", RUNGS["bf16"].knobs, "B = 6", "", 0, batch=6)
    fp32, bf16, bf16_b6 = run_ladder(["fp32", "bf16", big], **TINY)
    assert (fp32.batch, bf16.batch, bf16_b6.batch) == (2, 2, 6)
    assert bf16_b6.tokens_per_s == pytest.approx(6 * 16 / (bf16_b6.ms_median / 1000))
    assert bf16_b6.speedup == pytest.approx(bf16_b6.tokens_per_s / fp32.tokens_per_s)
    assert bf16.ref_loss == fp32.loss and bf16_b6.ref_loss != fp32.loss  # another batch, another reference
    assert bf16_b6.guard_ok, bf16_b6.guard
    # the reference at batch 6: three accumulated micro-batches of 2 give the loss of one batch of 6
    (alone,) = run_ladder([Rung("fp32_b6", RUNGS["fp32"].knobs, "", "", 0, batch=6)], **TINY)
    assert bf16_b6.ref_loss == pytest.approx(alone.loss, abs=1e-5)


def test_compare_is_per_token_when_batches_differ():
    def rung(batch, median, lo, hi):
        return RungResult(rung="x", knobs={}, config={}, preset=None, batch=batch, seq=4, steps=3, warmup=0,
                          device="cpu", hardware={}, started="", ms_median=median, ms_min=lo, ms_max=hi)

    assert compare(rung(16, 100, 95, 105), rung(64, 300, 290, 310)) == (pytest.approx(4 / 3), "faster")
    assert compare(rung(16, 100, 95, 105), rung(64, 500, 490, 510)) == (pytest.approx(0.8), "slower")
