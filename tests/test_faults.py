"""kill -9 at random moments, then the documented way on: a run and a prepare end as if never interrupted.

kill -9 runs no cleanup, so it finds every window there is: inside a training step, a checkpoint or its
pointer or hash being written, a log line being appended, a shard or the manifest being written, the very
first moments before any file exists. The moments are drawn from a seeded generator, so a failure can be
replayed; each loop records where its kills landed, and the assertion messages print them.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2lab.engine import data
from gpt2lab.engine.prepare import prepare
from gpt2lab.run import checkpoint
from gpt2lab.run.folder import RUN_INFO, read_log

ROOT = Path(__file__).resolve().parents[1]
KILLS = 4


def launch(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpt2lab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_when(proc, ready, delay: float, timeout: float = 120) -> str:
    """Wait until `ready()` (or the process ends), then `delay` seconds more, then kill -9. Where it landed."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        return "finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return "killed"


def train_args(shards, out, *extra):
    return ["train", "--preset", "smoke", "--data", shards, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "64", "--max-steps", "24", "--warmup-steps", "4", "--checkpoint-every", "2",
            "--keep-checkpoints", "2", "--val-every", "6", "--sample-every", "0", "--log-every", "1",
            "--no-progress", "--out-dir", str(out), *extra]


def since(path: Path, started: float) -> bool:
    """Whether `path` was written by the process launched at `started` (not left by an earlier one)."""
    try:
        return path.stat().st_mtime >= started
    except OSError:
        return False


def logged_steps(out: Path) -> int:
    try:
        return (out / "log.jsonl").read_text().count('"type": "train"')
    except OSError:
        return 0


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    prepare("tinyshakespeare", folder, shard_size=33_800, workers=1, progress=False)
    return str(folder)


@pytest.mark.slow
def test_a_run_killed_at_random_moments_ends_as_an_uninterrupted_one(shakespeare, tmp_path):
    straight = launch(train_args(shakespeare, tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.communicate()
    want = [(r["step"], r["loss"], r["lr"]) for r in read_log(tmp_path / "straight")]
    want_val = [(r["step"], r["val_loss"]) for r in read_log(tmp_path / "straight", "val")]

    rng = random.Random(2026)
    out, landed = tmp_path / "killed", []
    for i in range(KILLS):
        resume = (out / RUN_INFO).exists()  # as a user would: --resume once the run has recorded itself
        base = checkpoint.peek(checkpoint.latest(out))["step"] if checkpoint.saved_steps(out) else 0
        after, started = base + rng.randrange(0, 24 - base), time.time()
        proc = launch(train_args(shakespeare, out, *(["--resume"] if resume else [])))
        if i == 0:  # the first kill comes once the run has recorded itself, before its first checkpoint
            after, ready = -1, lambda: (out / RUN_INFO).exists()
        else:  # once this process has logged that step (it rewrites the log first, dropping steps it redoes)
            ready = lambda: since(out / "log.jsonl", started) and logged_steps(out) >= after  # noqa: E731
        what = kill_when(proc, ready, rng.uniform(0, 0.05))
        landed.append(f"{'resume' if resume else 'start'}: {what} after step {after}, {logged_steps(out)} steps "
                      f"logged, checkpoints {checkpoint.saved_steps(out)}")
    print("\n".join(landed))
    last = launch(train_args(shakespeare, out, "--resume"))
    assert last.wait(timeout=300) == 0, (landed, last.communicate())
    got = [(r["step"], r["loss"], r["lr"]) for r in read_log(out)]
    assert got == want, landed
    assert [(r["step"], r["val_loss"]) for r in read_log(out, "val")] == want_val, landed
    assert checkpoint.max_param_diff(checkpoint.latest(out), checkpoint.latest(tmp_path / "straight")) == 0.0


@pytest.mark.slow
def test_a_prepare_killed_at_random_moments_ends_as_a_straight_one(tmp_path):
    rng = random.Random(7)
    docs = [f"Document {i}. " + "the quick brown fox jumps over the lazy dog " * rng.randrange(1, 60)
            for i in range(1500)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    args = ["prepare", "--source", str(source), "--shard-size", "3000", "--workers", "1"]
    want = prepare(str(source), tmp_path / "straight", shard_size=3000, workers=1, progress=False)  # in this process
    assert len(want["shards"]) > 20

    out, landed = tmp_path / "killed", []

    def shards_written():
        return len(list(out.glob("shard_*.bin"))) if out.is_dir() else 0

    def listed():
        return len(data.read_manifest(out)["shards"]) if (out / data.MANIFEST).is_file() else 0

    for _ in range(KILLS):
        after, started = listed() + rng.randrange(0, max(1, len(want["shards"]) - listed())), time.time()
        proc = launch([*args, "--out", str(out)])
        ready = lambda: since(out / data.MANIFEST, started) and listed() >= after  # noqa: E731
        what = kill_when(proc, ready, rng.uniform(0, 0.02))
        landed.append(f"{what} after {after} shards ({shards_written()} on disk)")
    print("\n".join(landed))
    last = launch([*args, "--out", str(out)])
    assert last.wait(timeout=300) == 0, (landed, last.communicate())
    assert data.read_manifest(out) == want, landed
    for entry in want["shards"]:
        assert data.shard_problem(out, entry, sha256=True) is None, landed
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "straight").iterdir()), landed
