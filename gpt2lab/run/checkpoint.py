"""Checkpoints: everything needed to continue a run exactly, written so a crash never leaves a torn file.

A run folder holds step-numbered checkpoints `step_000500.pt`, ... and a small text file `latest` naming
the newest complete one. Each checkpoint is written atomically (gpt2lab.base.atomic) *before* `latest` is
switched to it, so `latest` always names a whole file: a full disk or a crash mid-write leaves the previous
checkpoint and pointer as they were. Only the newest `keep` checkpoints are kept. Beside each checkpoint a
sidecar `step_N.pt.sha256` (written before the pointer switches) holds the sha256 of its bytes: loading checks
it, so a file damaged later (a bad disk, a torn copy) is refused in one line instead of giving a model of
garbage numbers. Checkpoints without a sidecar (older ones) load unchecked.

Saved as a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
can read it: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import torch

from gpt2lab.base import atomic, checks
from gpt2lab.base.download import sha256_file
from gpt2lab.base.errors import UserError, one_line

POINTER = "latest"  # a text file naming the newest complete checkpoint
LEGACY = "latest.pt"  # what run folders held before step-numbered checkpoints
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def step_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"step_{step:06d}.pt"


def saved_steps(folder: str | os.PathLike) -> list[int]:
    """Steps of the step-numbered checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.fullmatch(p.name)))


def latest(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in a run folder, or None if it holds none. `latest` names it; if that
    pointer is missing (a crash between the checkpoint and the pointer, a deleted file) or names no checkpoint
    file, the newest complete, loadable step checkpoint is used instead, and one line on stderr says so."""
    folder = Path(folder)
    pointer = folder / POINTER
    if pointer.is_file():
        try:
            name = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if _STEP_FILE.fullmatch(name) or name == LEGACY:
            if (folder / name).is_file():
                return folder / name
            problem = f"{pointer} names {name}, which is missing"
        else:
            problem = f"{pointer} does not name a checkpoint ({name[:40]!r})"
    elif not saved_steps(folder):
        return folder / LEGACY if (folder / LEGACY).is_file() else None
    else:
        problem = f"{folder} has step checkpoints but no {POINTER} pointer"
    found = newest_complete(folder)
    if found is None:
        if (folder / LEGACY).is_file():
            found = folder / LEGACY
        else:
            raise UserError(f"{problem}, and no complete checkpoint is left to fall back on (step files: "
                            f"{[step_path(folder, s).name for s in saved_steps(folder)] or 'none'})")
    _say_once(f"gpt2lab: {problem}; using {found.name}, the newest complete checkpoint")
    return found


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


def newest_complete(folder: str | os.PathLike) -> Path | None:
    """The newest step checkpoint that is whole and loads (its small entries are read, not its tensors)."""
    for step in reversed(saved_steps(folder)):
        path = step_path(folder, step)
        if complete(path):
            return path
    return None


def complete(path: Path) -> bool:
    """Whether a checkpoint file is whole: a zip file that matches its sha256 (if it has one) and that
    torch.load reads (tensors mapped, not read)."""
    import zipfile

    if not zipfile.is_zipfile(path) or integrity_problem(path):
        return False
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


def save(state: dict, folder: str | os.PathLike, keep: int = 0) -> Path:
    """Write `state` as the checkpoint of step `state["step"]`, point `latest` at it, and keep only the
    newest `keep` checkpoints (0 keeps all). An OSError (disk full, ...) leaves the previous ones intact; so does
    a RuntimeError from torch.save's writer, raised again as an OSError."""
    folder = Path(folder)
    path = step_path(folder, state["step"])
    with atomic.atomic_write(path) as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write (disk full) as RuntimeError:
            # "unexpected pos ..." or "file write failed"; it is an OSError like any other failed write
            raise OSError(errno.EIO, f"torch.save could not write it ({one_line(e)[:160]})") from e
    # the hash of the bytes on disk, then the pointer: `latest` names only a whole file that can prove it
    atomic.write_text(hash_path(path), f"{sha256_file(path)}  {path.name}\n")
    atomic.write_text(folder / POINTER, path.name + "\n")  # switched only once the file is whole
    if keep > 0:
        prune(folder, keep, newest=state["step"])
    return path


def prune(folder: str | os.PathLike, keep: int, newest: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints up to step `newest` (the one `latest` names); later
    ones, left by an attempt that was then resumed from an earlier step, are overwritten as the run redoes
    them. Returns what was deleted."""
    older = [s for s in saved_steps(folder) if s <= newest]
    doomed = [step_path(folder, s) for s in older[: max(len(older) - keep, 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)
        hash_path(path).unlink(missing_ok=True)
    return doomed


def hash_path(path: Path) -> Path:
    """The sidecar `step_N.pt.sha256` (sha256sum's format) holding the sha256 of a checkpoint's bytes."""
    return path.with_name(path.name + ".sha256")


def integrity_problem(path: Path) -> str | None:
    """Why a checkpoint's bytes are not the ones that were saved, or None when they are (or when it has no
    sidecar: checkpoints from before the hashes load as they are)."""
    sidecar = hash_path(path)
    if not sidecar.is_file():
        return None
    try:
        expected = sidecar.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        return f"its hash file {sidecar.name} is unreadable"
    if len(expected) != 64:
        return f"its hash file {sidecar.name} holds no sha256"
    actual = sha256_file(path)
    if actual != expected:
        return (f"its bytes do not match the sha256 saved with it in {sidecar.name} ({actual[:12]}... instead of "
                f"{expected[:12]}...): the file changed after it was written (disk or copy error)")
    return None


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint file, or the newest complete one of a run folder."""
    path = Path(path)
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise UserError(f"no checkpoint in {path}")
        path = found
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    problem = integrity_problem(path)
    if problem:
        raise UserError(f"{path} is damaged: {problem}{older_intact(path)}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one, not a pickle traceback
        raise UserError(f"{path} is not a readable gpt2lab checkpoint ({unreadable_reason(path, e)})"
                        f"{older_intact(path)}") from None


def older_intact(path: Path) -> str:
    """For the message about a damaged step checkpoint: the newest whole one before it, and how to use it."""
    match = _STEP_FILE.fullmatch(path.name)
    if not match:
        return ""
    step = int(match.group(1))
    for older in reversed([s for s in saved_steps(path.parent) if s < step]):
        if complete(step_path(path.parent, older)):
            return (f"; {step_path(path.parent, older).name} before it is intact: move {path.name} out of the "
                    "folder and the run resumes from that one")
    return "; no intact checkpoint is older"


def unreadable_reason(path: Path | None, error: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in words. Never torch's own advice to retry with
    weights_only=False: that would run whatever code the file holds, and gpt2lab never needs it."""
    import pickle
    import zipfile

    if path is not None and not zipfile.is_zipfile(path):
        return "not a file written by torch.save"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error):
        return "it holds Python objects other than tensors and plain data, which gpt2lab never saves"
    return one_line(error if isinstance(error, OSError) else f"{type(error).__name__}: {error}")[:300]


def peek(path: str | os.PathLike) -> dict:
    """A checkpoint's small entries (step, configs, preset) without reading its tensors into memory."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable gpt2lab checkpoint ({unreadable_reason(path, e)})"
                        f"{older_intact(path)}") from None
    return {k: v for k, v in state.items() if k in ("step", "train_config", "model_config", "preset")}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's OptimizedModule, DistributedDataParallel


def unwrap_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the prefixes torch.compile and DDP add (`module._orig_mod.lm_head.weight` -> `lm_head.weight`)."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def load_model(path: str | os.PathLike, device="cpu", option: str = "--checkpoint"):
    """The one way to get a GPT out of a training checkpoint or run folder (sample, hellaswag, the chapters):
    in eval mode (no dropout, so scoring and sampling are repeatable), with the prefixes torch.compile and DDP
    add removed. Every failure is one UserError naming `option`: unreadable, damaged (sha256), not a GPT of
    ours, or weights that are NaN or infinite (a run that had diverged), which would only sample garbage."""
    from gpt2lab.engine.model import GPT, GPTConfig

    try:
        state = load(path)
    except UserError as e:
        raise UserError(f"{option} {e}") from None
    try:
        model = GPT(GPTConfig(**state["model_config"]))
        model.load_state_dict(unwrap_state_dict(state["model"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # readable, but not a GPT of ours
        raise UserError(f"{option} {path}: not a gpt2lab model checkpoint ({one_line(e)[:200]})") from None
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{option} {path}: the model's weights hold NaN or infinite values ({bad[0]}"
                        f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the run had diverged when it "
                        "was saved; use an earlier checkpoint")
    return model.to(device).eval()


def max_param_diff(a: str | os.PathLike, b: str | os.PathLike) -> float:
    """Largest absolute difference between the model weights of two checkpoints."""
    sa, sb = load(a)["model"], load(b)["model"]
    if sa.keys() != sb.keys():
        raise UserError("the two checkpoints hold different models")
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def check_input(path, option: str = "--checkpoint") -> None:
    """A checkpoint file, or a run folder holding one: checked before any model is built."""
    p = Path(path)
    if p.is_dir():
        if latest(p) is None:
            raise UserError(f"{option} {path}: the folder holds no checkpoint")
    else:
        checks.input_file(p, option)
