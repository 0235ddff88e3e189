"""A run folder: what one training run writes, and the rules that keep two runs out of one folder.

It holds the JSONL log (`log.jsonl`, appended one record per line, so only its last line can ever be torn), the
run's settings as started (`run.json`), its step-numbered checkpoints (gpt2lab.run.checkpoint) and `run.lock`,
which a live run holds (gpt2lab.base.lock). A new run starts only in a folder with no checkpoint and no logged
step of another run; a resumed one drops the log lines of steps after its checkpoint, since it will redo them.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from gpt2lab.base import atomic, dist, lock
from gpt2lab.base.errors import UserError
from gpt2lab.base.shell import python_command
from gpt2lab.run import checkpoint

LOG = "log.jsonl"
RUN_INFO = "run.json"


class RunFolder:
    """The folder of one run, as its rank-0 process writes it (other ranks write nothing)."""

    def __init__(self, path: str | os.PathLike, info: dist.DistInfo, echo: bool = True):
        self.path, self.info, self.echo = Path(path), info, echo and info.is_master

    def start_new(self, replace_log: bool = False) -> None:
        """Create the folder for a new run: refused where another run left checkpoints or logged steps (unless
        `replace_log`: the same run started again after it stopped before its first checkpoint)."""
        if self.info.is_master:
            self.path.mkdir(parents=True, exist_ok=True)
            refuse_existing_run(self.path, str(self.path), log_too=not replace_log)
            (self.path / LOG).write_text("")

    def keep_log_before(self, step: int) -> None:
        """On resume from `step`: drop the log lines of later steps (they will be redone) and a torn last line."""
        if not self.info.is_master:
            return
        lines, torn = log_lines(self.path / LOG)
        if torn:
            print(f"gpt2lab: dropped the torn last line of {self.path / LOG} ({len(torn)} bytes, cut short when it "
                  "was written, e.g. by a full disk)", file=sys.stderr, flush=True)
        kept = [ln for ln in lines if json.loads(ln)["step"] < step]
        atomic.write_text(self.path / LOG, "".join(ln + "\n" for ln in kept))

    def log(self, record: dict, line: str | None = None) -> None:
        """Append one record; print `line` too (above the progress bar) when given."""
        if not self.info.is_master:
            return
        with open(self.path / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        if line and self.echo:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def write_info(self, run_info: dict) -> None:
        if self.info.is_master:
            atomic.write_text(self.path / RUN_INFO, json.dumps(run_info, indent=1) + "\n")

    def resume_command(self) -> str:
        """The command that continues this run (its settings come from the checkpoint)."""
        args = f"-m gpt2lab train --out-dir {shlex.quote(str(self.path))} --resume"
        if not self.info.ddp:
            return f"{python_command()} {args}"  # the interpreter that ran this one: .venv/bin/python if not activated
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
        if per_node == self.info.world_size:
            return f"torchrun --standalone --nproc_per_node={per_node} {args}"
        return f"the same torchrun command with {args}"

    def last_good(self) -> str:
        saved = checkpoint.latest(self.path)
        return f"the last good checkpoint is {saved}" if saved else "no checkpoint was written yet"


@contextmanager
def locked(out_dir, create: bool = True):
    """The run folder is this run's while the block runs: a second `train` into it (new or --resume) is
    refused with the pid of this one. Only rank 0 holds the lock (every rank writes into one folder).
    create=False: only a folder that has a lock file is locked (a check before the run that writes nothing)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with lock.held(out_dir, what="a training run", create=create):
        yield


def refuse_existing_run(out: Path, name: str, log_too: bool = True) -> None:
    """A new run starts only in a folder with no checkpoint and no logged step of an earlier run."""
    if checkpoint.saved_steps(out) or (out / checkpoint.POINTER).exists() or (out / checkpoint.LEGACY).exists():
        held = "checkpoints"
    elif log_too and (out / LOG).is_file() and (out / LOG).stat().st_size > 0:
        held = f"the {LOG} of a run that wrote no checkpoint yet"
    else:
        return
    raise UserError(f"{name} already holds a run ({held}); pass --resume to continue it, or pick another --out-dir")


def restartable_info(out_dir) -> dict | None:
    """A run's run.json (its settings as started) where it records the run's settings, else None: what `--resume`
    starts again from when the run stopped before its first checkpoint."""
    try:
        info = json.loads((Path(out_dir) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("config"), dict) else None


def read_log(out_dir, kind: str = "train") -> list[dict]:
    lines, _ = log_lines(Path(out_dir) / LOG)
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def log_lines(path: Path) -> tuple[list[str], bytes]:
    """The whole JSON lines of a run's log, and the torn last line (b"" if none) that a write cut short (a full
    disk, a crash) left: only the last line can be torn, since the log is only ever appended to. A bad line
    before the last is damage, not a torn write: UserError."""
    data = path.read_bytes() if path.is_file() else b""
    pieces = [p for p in data.split(b"\n") if p.strip()]
    lines = []
    for i, piece in enumerate(pieces):
        try:
            line = piece.decode()
            json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            if i == len(pieces) - 1:
                return lines, piece
            raise UserError(f"{path}, line {i + 1}, is not a JSON record (the log was damaged); fix or remove that "
                            "line, then resume") from None
        lines.append(line)
    return lines, b""
