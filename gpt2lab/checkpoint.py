"""Checkpoints: everything needed to continue a run exactly, written so a crash never leaves a torn file.

Saved as a plain dict of tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
can read it: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gpt2lab.errors import UserError, one_line

LATEST = "latest.pt"


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to a temporary file, fsync it, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one, not a pickle traceback
        raise UserError(f"{path} is not a readable gpt2lab checkpoint ({unreadable_reason(path, e)})") from None


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


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(path: str | os.PathLike, device="cpu"):
    """A GPT from a training checkpoint (for evaluation and sampling)."""
    from gpt2lab.model import GPT, GPTConfig

    state = load(path)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device)


def max_param_diff(a: str | os.PathLike, b: str | os.PathLike) -> float:
    """Largest absolute difference between the model weights of two checkpoints."""
    sa, sb = load(a)["model"], load(b)["model"]
    if sa.keys() != sb.keys():
        raise UserError("the two checkpoints hold different models")
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
