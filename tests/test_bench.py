"""The benchmark harness: output shape and finiteness, skip reasons, the correctness guard, MFU math,
results files, plot and CLI. No timing thresholds: timings depend on the machine."""

import json
import math
import shutil

import pytest
import torch

from gpt2lab import bench, cli
from gpt2lab.bench import (
    RungResult, append_jsonl, flops_per_token, format_table, hardware_record, load_jsonl, loss_guard,
    peak_flops, plot_ladder, run_ladder,
)
from gpt2lab.knobs import RUNGS, Knobs
from gpt2lab.model import get_config
from gpt2lab.reference import VIDEO_A100_LADDER

TINY = dict(config="test", batch=2, seq=16, steps=2, warmup=1, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ladder():
    return run_ladder(["fp32", "tf32", "bf16"], peak_tflops=1.0, **TINY)


def test_ladder_results_shape_and_finiteness(ladder):
    assert [r.rung for r in ladder] == ["fp32", "tf32", "bf16"]
    fpt = flops_per_token(get_config("test"), 16)
    for r in ladder:
        assert r.skipped is None and r.knobs == RUNGS[r.rung].__dict__
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
    assert all(s in table for s in ("fp32", "tf32", "bf16", "ms/step", "tok/s", ladder[0].hardware["device_name"]))


def test_skipped_rungs_are_recorded_with_reason(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler on this "machine"
    results = run_ladder(["fp32", ("fp16", Knobs(autocast="fp16")), "compile"], **TINY)
    assert [r.rung for r in results] == ["fp32", "fp16", "compile"]
    fp32, fp16, compiled = results
    assert fp32.skipped is None
    assert "GPU" in fp16.skipped and "C++ compiler" in compiled.skipped
    for r in (fp16, compiled):
        assert r.ms_median is None and r.loss is None and r.guard_ok is None and r.step_ms == []
    assert format_table(results).count("skipped:") == 2


def test_guard_reference_is_run_when_fp32_is_not_listed():
    (bf16,) = run_ladder(["bf16"], **TINY)
    assert bf16.ref_loss is not None and bf16.guard_ok is True
    assert bf16.speedup is None  # no timed fp32 rung to compare with


def test_guard_flags_a_broken_rung(monkeypatch):
    real_build = bench.build

    def build_that_forgets_to_train_bf16(knobs, *args, **kwargs):
        built = real_build(knobs, *args, **kwargs)
        if knobs.autocast == "bf16":
            for group in built.optimizer.param_groups:
                group["lr"] = 0.0
        return built

    monkeypatch.setattr(bench, "build", build_that_forgets_to_train_bf16)
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


def test_compiled_rung_runs_and_matches_fp32():
    fp32, compiled = run_ladder(["fp32", "compile"], **dict(TINY, steps=1))
    assert compiled.skipped is None, compiled.skipped
    assert math.isfinite(compiled.ms_median) and compiled.first_step_s > 0
    assert compiled.guard_ok is True, compiled.guard


def test_flops_per_token_hand_computed():
    # test preset: vocab 512, 2 layers, n_embd 32. Parameters that do matmuls (all but wpe):
    # wte/lm_head 512*32 = 16384; per layer 2 LayerNorms 2*64, c_attn 32*96+96, attn c_proj 32*32+32,
    # c_fc 32*128+128, mlp c_proj 128*32+32 = 12704; final LayerNorm 64. N = 16384 + 2*12704 + 64 = 41856.
    assert flops_per_token(get_config("test"), 16) == 6 * 41856 + 12 * 2 * 32 * 16
    # GPT-2 124M at T=1024: N = 124,439,808 - 1024*768 (wpe) = 123,653,376
    fpt = flops_per_token(get_config("gpt2"), 1024)
    assert fpt == 6 * 123_653_376 + 12 * 12 * 768 * 1024 == 855_166_464
    # the video's last rung, 16*1024 tokens in 90 ms on an A100 in bf16: about 50% MFU
    mfu = 16 * 1024 / 0.090 * fpt / peak_flops("NVIDIA A100-SXM4-80GB", "bf16")
    assert mfu == pytest.approx(0.499, abs=1e-3)


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


def test_jsonl_round_trip(ladder, tmp_path):
    path = tmp_path / "results" / "ladder.jsonl"
    append_jsonl(path, ladder)
    append_jsonl(path, ladder[:1])
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["hardware"]["device"] == "cpu" for line in lines)
    assert load_jsonl(path) == ladder + ladder[:1]


def test_plot_ladder(ladder, tmp_path):
    skipped = RungResult(**{**ladder[0].to_dict(), "rung": "compile", "skipped": "no compiler", "ms_median": None,
                            "speedup": None, "guard_ok": None})
    fig = plot_ladder([r.to_dict() for r in ladder] + [skipped])  # dicts too, as from a results file
    ms_axis, speedup_axis = fig.axes[:2]
    assert "ms" in ms_axis.get_ylabel() and "speed-up" in speedup_axis.get_ylabel()
    labels = [t.get_text() for t in ms_axis.get_xticklabels()]
    assert labels == ["fp32", "tf32", "bf16", "compile"]
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "A100" in legend and ladder[0].hardware["device_name"] in legend
    fig.savefig(tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 0


def test_reference_is_the_videos_ladder():
    ref = VIDEO_A100_LADDER
    assert list(ref.ms_per_step) == list(RUNGS)
    assert (ref.batch, ref.seq, ref.ms_per_step["fp32"], ref.ms_per_step["fused_adamw"]) == (16, 1024, 1000, 90)
    assert "build-nanogpt" in ref.source and "A100" in ref.gpu
    assert ref.speedup("fused_adamw") == pytest.approx(11.1, abs=0.05)


@pytest.fixture
def bench_only(monkeypatch):
    """The CLI with just the bench command, so these tests do not depend on other commands' modules."""
    monkeypatch.setattr(cli, "COMMANDS", {"bench": cli.COMMANDS["bench"]})


def test_cli_appends_one_json_line_per_rung(bench_only, tmp_path, capsys):
    path, png = tmp_path / "ladder.jsonl", tmp_path / "ladder.png"
    argv = ["bench", "--preset", "test", "--rungs", "fp32,bf16", "--batch", "2", "--seq", "16", "--steps", "1",
            "--warmup", "1", "--device", "cpu", "--json", str(path), "--plot", str(png)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "bf16" in out and "ladder wall time" in out
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["rung"] for r in rows] == ["fp32", "bf16"]
    assert all(r["preset"] == "test" and r["batch"] == 2 and r["hardware"]["device"] == "cpu" for r in rows)
    assert png.stat().st_size > 0
    assert cli.main(argv) == 0
    assert len(path.read_text().splitlines()) == 4  # appended, not overwritten


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rungs", "fp32,fp8"], "unknown rung 'fp8'"),
        (["--preset", "gpt5"], "unknown preset 'gpt5'"),
        (["--batch", "0"], "batch must be a positive integer"),
        (["--steps", "-3"], "steps must be a positive integer"),
        (["--warmup", "-1"], "warmup must be >= 0"),
        (["--seq", "64"], "exceeds the model's block_size 32"),
        (["--peak-tflops", "0"], "must be positive"),
        (["--device", "tpu9"], "unknown device"),
        (["--json", "{file}/ladder.jsonl"], "cannot write there"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(bench_only, tmp_path, capsys, args, message):
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    args = [a.format(file=a_file) for a in args]
    base = ["bench", "--preset", "test", "--device", "cpu", "--batch", "2", "--seq", "16", "--steps", "1"]
    assert cli.main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu(bench_only, capsys):
    assert cli.main(["bench", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_hardware_record_reports_cpu_bf16_support(monkeypatch, tmp_path):
    from gpt2lab import bench

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n")
    real_path = bench.Path
    monkeypatch.setattr(bench, "Path", lambda p: real_path(info) if p == "/proc/cpuinfo" else real_path(p))
    assert bench.cpu_bf16_instructions() == ["avx512_bf16"]
    record = bench.hardware_record("cpu")
    assert record["cpu"] == "Test CPU" and record["cpu_bf16"] == ["avx512_bf16"]
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert bench.cpu_bf16_instructions() == []


def test_compare_calls_a_difference_only_outside_the_noise():
    from gpt2lab.bench import RungResult, compare

    def rung(median, lo, hi):
        return RungResult(rung="x", knobs={}, config={}, preset=None, batch=1, seq=1, steps=3, warmup=0,
                          device="cpu", hardware={}, started="", ms_median=median, ms_min=lo, ms_max=hi)

    assert compare(rung(100, 95, 110), rung(50, 45, 60)) == (2.0, "faster")
    assert compare(rung(50, 45, 60), rung(100, 95, 110)) == (0.5, "slower")
    assert compare(rung(100, 90, 110), rung(95, 85, 105)) == (100 / 95, "within noise")
