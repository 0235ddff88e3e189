"""The resume check of chapter 13: a straight run and a stopped-and-resumed one, through the command line."""

import pytest

from gpt2lab.engine.prepare import prepare
from gpt2lab.lessons import resume as R


def test_resume_check_compares_losses_and_schedule():
    straight = [{"step": 0, "loss": 2.0, "lr": 1e-3, "ms": 5.0}, {"step": 1, "loss": 1.5, "lr": 2e-3, "ms": 7.0}]
    same = R.ResumeCheck("x", straight, [dict(r) for r in straight])
    assert same.losses_identical and same.schedule_identical and same.largest_difference == 0
    drift = R.ResumeCheck("y", straight, [straight[0], {**straight[1], "loss": 1.5 + 1e-6}])
    assert not drift.losses_identical and drift.schedule_identical
    assert drift.largest_difference == pytest.approx(1e-6)
    assert "losses identical: False" in drift.summary()
    assert R.median_ms_per_step(straight, warmup=0) == 6.0
    with pytest.raises(ValueError):
        R.median_ms_per_step(straight, warmup=2)


def test_train_cli_reports_a_failed_run(tmp_path):
    with pytest.raises(RuntimeError, match="exited with"):
        R.train_cli(tmp_path / "x", "--preset", "no-such-preset")


@pytest.mark.slow
def test_a_cpu_run_resumes_bit_exact(tmp_path):
    data = tmp_path / "shards"
    prepare("tinyshakespeare", data, shard_size=33_800, workers=1, progress=False)
    check = R.straight_and_resumed(tmp_path, "t", "smoke", steps=4, deterministic=False,
                                   extra=("--data", str(data), "--batch-size", "2", "--seq-len", "32",
                                          "--total-batch", "64"))
    assert [r["step"] for r in check.resumed] == [0, 1, 2, 3]
    assert check.losses_identical and check.schedule_identical
