"""One run per run folder: an OS lock held for the run's life, and a new run never starts over an old one."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.base import lock
from gpt2lab.base.errors import UserError
from gpt2lab.cli.main import main
from gpt2lab.engine.data import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from gpt2lab.base import lock; lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/run (as a live `train` does)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_held_folder_is_refused_naming_the_pid_and_kill_9_leaves_no_stale_lock(holder):
    folder, proc = holder
    with pytest.raises(UserError, match=rf"{folder} is in use by a run still running \(pid {proc.pid}, holding run.lock\)"):
        lock.acquire(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / "run.lock").is_file()  # the file stays; the lock went with the process
    path = lock.acquire(folder)
    assert (folder / "run.lock").read_text() == f"{os.getpid()}\n"
    assert lock.acquire(folder) == path  # reentrant within one process
    lock.release(path)
    lock.release(path)


@pytest.mark.parametrize("resume", [False, True])
def test_train_into_a_folder_held_by_a_live_run_is_one_line_exit_2_and_writes_nothing(holder, capsys, resume):
    folder, proc = holder
    (folder / "log.jsonl").write_text('{"type": "train", "step": 0, "loss": 9.0}\n')
    before = snapshot(folder)
    args = ["train", "--out-dir", str(folder), "--no-progress"]
    assert main(args + ["--resume"] if resume else args + ["--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpt2lab train: error: ")
    assert f"{folder} is in use by a training run still running (pid {proc.pid}" in err
    assert snapshot(folder) == before


def test_without_a_lock_file_the_check_creates_nothing(tmp_path):
    assert lock.acquire(tmp_path / "new", create=False) is None
    assert not (tmp_path / "new").exists()


def test_a_new_run_never_starts_over_a_log_without_checkpoints(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / MANIFEST).write_text("{}")  # passes the cheap data check; the run folder is refused first
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"type": "train", "step": 0, "loss": 9.0}\n')
    before = snapshot(out)
    assert main(["train", "--preset", "smoke", "--data", str(data), "--out-dir", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"gpt2lab train: error: --out-dir {out} already holds a run (the log.jsonl of a run that wrote no checkpoint "
        "yet); pass --resume to continue it, or pick another --out-dir\n")
    assert snapshot(out) == before
    (out / "log.jsonl").write_text("")  # an empty log (a run that stopped before its first step) is no run
    (out / "step_000003.pt").write_bytes(b"x")
    assert main(["train", "--preset", "smoke", "--data", str(data), "--out-dir", str(out), "--no-progress"]) == 2
    assert "already holds a run (checkpoints)" in capsys.readouterr().err
