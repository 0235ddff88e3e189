"""OpenAI's GPT-2 weights: where they come from, and Hugging Face's own implementation beside ours.

Weights for `gpt2` are looked for in this order: a local folder named by $GPT2LAB_GPT2_WEIGHTS, the Hugging
Face cache, the hub. Whether the hub can be reached is `gpt2lab.base.hub.hub_status` (the environment's offline
switch, else one connection probe per process of about a second), so an offline machine does not spend tens of
seconds in the hub client's retries before falling back.

`reference_pair` gives both models with identical weights: OpenAI's where they can be had, otherwise
a small randomly initialised `GPT2LMHeadModel` saved to a temporary folder, so the comparison of our
logits with transformers' logits runs anywhere (it then checks the loading code, not the famous weights).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gpt2lab.base.errors import UserError
from gpt2lab.base.hub import hub_status
from gpt2lab.engine.model import GPT, GPTConfig

WEIGHTS_ENV = "GPT2LAB_GPT2_WEIGHTS"  # a local Hugging Face folder of GPT-2 (124M): config.json + model.safetensors
HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
_WEIGHT_FILES = ["config.json", "model.safetensors", "pytorch_model.bin"]


def local_weights() -> Path | None:
    """The folder named by $GPT2LAB_GPT2_WEIGHTS, checked; None when the variable is unset."""
    value = os.environ.get(WEIGHTS_ENV)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"{WEIGHTS_ENV}={value}: not a Hugging Face GPT-2 folder (no config.json there)")
    if not _complete(folder):
        raise UserError(f"{WEIGHTS_ENV}={value}: neither model.safetensors nor pytorch_model.bin there")
    return folder


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in _WEIGHT_FILES[1:])


def gpt2_weights(name: str = "gpt2") -> tuple[Path, str]:
    """A local folder holding the hub model `name`, and where it came from in words.

    Raises ConnectionError, with one line saying why and what to set, when the weights are neither
    local nor downloadable.
    """
    if name not in HUB_NAMES:
        raise FileNotFoundError(f"{name!r} is neither a checkpoint folder nor one of {HUB_NAMES}")
    if name == "gpt2" and (folder := local_weights()) is not None:
        return folder, f"${WEIGHTS_ENV} ({folder})"
    from huggingface_hub import snapshot_download

    repo = f"openai-community/{name}"
    try:
        cached = Path(snapshot_download(repo, allow_patterns=_WEIGHT_FILES, local_files_only=True))
        if _complete(cached):
            return cached, "the Hugging Face cache"
    except Exception:  # not cached: fall through to the hub
        pass
    reachable, why = hub_status()
    if not reachable:
        hint = f"; set {WEIGHTS_ENV} to a local copy" if name == "gpt2" else ""
        raise ConnectionError(f"Hugging Face hub not reachable ({why}){hint}")
    return Path(snapshot_download(repo, allow_patterns=_WEIGHT_FILES)), "the Hugging Face hub"


def load_gpt2(name_or_path: str | os.PathLike = "gpt2", **overrides) -> GPT:
    """The one way to load GPT-2 weights: a Hugging Face checkpoint folder, or a hub name (gpt2, gpt2-medium, ...),
as a GPT in eval mode.

    `overrides` change the config, e.g. vocab_size=50304 pads the vocabulary (the extra rows are
    never produced by the tokenizer) or attn="naive". Local folders need no network.
    """
    folder = _resolve_checkpoint(name_or_path)
    hf = json.loads((folder / "config.json").read_text())
    loaded = GPTConfig(
        block_size=hf["n_positions"], vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
    )
    config = replace(loaded, **overrides)
    if (config.n_layer, config.n_head, config.n_embd) != (loaded.n_layer, loaded.n_head, loaded.n_embd):
        raise ValueError("load_gpt2 cannot change n_layer, n_head or n_embd of a checkpoint")
    if config.vocab_size < loaded.vocab_size or config.block_size > loaded.block_size:
        raise ValueError("load_gpt2 can only pad vocab_size and shorten block_size")
    model = GPT(config)
    model.load_hf_state_dict(_read_state_dict(folder))
    return model.eval()


def _resolve_checkpoint(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
        return path
    return gpt2_weights(str(name_or_path))[0]  # local folder, cache or hub; fails fast offline


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


@dataclass
class ReferencePair:
    ours: GPT
    theirs: torch.nn.Module  # transformers.GPT2LMHeadModel
    source: str  # where the weights came from, in words
    pretrained: bool  # True: OpenAI's weights; False: random weights, offline


def random_hf_gpt2(seed: int = 0, noise: float = 0.02, **config):
    """A `transformers.GPT2LMHeadModel` (eval mode) with every parameter perturbed by N(0, noise):
    HF initialises biases and LayerNorm to 0 and 1, which would hide a bias or gain loaded into the wrong place."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bar from transformers while it saves or loads a model (it writes to stderr, which a book
    build reports as a warning for every cell)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def reference_pair(name: str = "gpt2", offline_shape: dict | None = None, seed: int = 0,
                   try_hub: bool = True) -> ReferencePair:
    """Our GPT and transformers' GPT2LMHeadModel with the same weights: OpenAI's if `gpt2_weights` finds
    them (`try_hub=False`: do not look), else random weights of `offline_shape`. `source` says which, and why."""
    import transformers

    reason = "not asked to look for them"
    if try_hub:
        try:
            folder, where = gpt2_weights(name)
            with _quiet_transformers():
                theirs = transformers.GPT2LMHeadModel.from_pretrained(folder)
            ours = load_gpt2(folder)
            return ReferencePair(ours.eval(), theirs.eval(), f"OpenAI's {name} weights from {where}", True)
        except (ConnectionError, OSError) as e:  # offline and not cached (OSError: a failed download)
            reason = str(e)
    shape = offline_shape or dict(n_layer=2, n_head=4, n_embd=64, n_positions=256)
    theirs = random_hf_gpt2(seed=seed, noise=0.02, vocab_size=50257, **shape)
    with tempfile.TemporaryDirectory() as tmp, _quiet_transformers():
        theirs.save_pretrained(tmp)
        ours = load_gpt2(tmp)
    return ReferencePair(ours.eval(), theirs, f"random weights, shape {shape} (OpenAI's not used: {reason})", False)
