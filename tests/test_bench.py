"""The bench command line: results files, plots, and one clear line for bad input."""

import json

import pytest
import torch

from gpt2lab.cli import main as cli

@pytest.fixture
def bench_only(monkeypatch):
    """The CLI with just the bench command, so these tests do not depend on other commands' modules."""
    monkeypatch.setattr(cli, "COMMANDS", {"bench": cli.COMMANDS["bench"]})


@pytest.mark.slow
def test_cli_appends_one_json_line_per_rung(bench_only, tmp_path, capsys):
    path, png = tmp_path / "ladder.jsonl", tmp_path / "ladder.png"
    argv = ["bench", "--model", "test", "--rungs", "fp32,bf16", "--batch-size", "2", "--seq-len", "16", "--steps", "1",
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
        (["--rungs", "fp32,fp4"], "unknown rung 'fp4'"),
        (["--model", "gpt5"], "--model gpt5: unknown model"),
        (["--preset", "gpt5"], "--model gpt5: unknown model"),  # the old spelling still works
        (["--batch-size", "0"], "--batch-size: batch must be a positive integer"),
        (["--batch", "0"], "--batch-size: batch must be a positive integer"),
        (["--steps", "-3"], "--steps: steps must be a positive integer"),
        (["--warmup", "-1"], "--warmup: warmup must be >= 0"),
        (["--seq-len", "64"], "exceeds the model's block_size 32"),
        (["--peak-tflops", "0"], "--peak-tflops: peak TFLOP/s must be positive"),
        (["--peak-tflops", "nan"], "--peak-tflops: peak TFLOP/s must be positive"),
        (["--device", "tpu9"], "--device tpu9: unknown device"),
        (["--json", "{file}/ladder.jsonl"], "not a folder"),
        (["--json", "{dir}"], "is a folder"),
        (["--plot", "{dir}/ladder.badext"], "unknown image format '.badext'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(bench_only, tmp_path, capsys, args, message):
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    args = [a.format(file=a_file, dir=tmp_path) for a in args]
    base = ["bench", "--model", "test", "--device", "cpu", "--batch-size", "2", "--seq-len", "16", "--steps", "1"]
    before = sorted(tmp_path.rglob("*"))
    assert cli.main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # checked before the work: nothing written


@pytest.mark.slow
def test_cli_defaults_fit_the_chosen_model(bench_only, capsys):
    """The CPU default T=128 is longer than the test model's 32 positions: the default shrinks to fit."""
    assert cli.main(["bench", "--model", "test", "--device", "cpu", "--rungs", "fp32", "--steps", "1",
                     "--warmup", "0"]) == 0
    assert "test B=4 T=32" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_warns_when_steps_spread_widely(bench_only, monkeypatch, capsys):
    from gpt2lab.cli import bench
    from gpt2lab.measure import ladder

    real = ladder.run_ladder

    def noisy_run(*args, **kwargs):
        results = real(*args, **kwargs)
        for r in results:
            r.ms_min, r.ms_max = r.ms_median / 3, r.ms_median * 3
        return results

    monkeypatch.setattr(bench, "run_ladder", noisy_run)
    assert cli.main(["bench", "--model", "test", "--device", "cpu", "--rungs", "fp32", "--steps", "2",
                     "--warmup", "0", "--batch-size", "2", "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "fp32 (noisy)" in out and "warning: the step times of fp32 spread widely" in out and "--steps 30" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu(bench_only, capsys):
    assert cli.main(["bench", "--device", "cuda"]) == 2
    assert "--device cuda: there is no CUDA device here" in capsys.readouterr().err


