"""OpenAI's GPT-2 weights next to Hugging Face's own implementation of the same model.

`reference_pair` gives both models with identical weights: from the hub when it can be reached, otherwise
a small randomly initialised `GPT2LMHeadModel` saved to a temporary folder, so the comparison of our
logits with transformers' logits runs anywhere (it then checks the loading code, not the famous weights).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from gpt2lab.model import GPT


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


def reference_pair(name: str = "gpt2", offline_shape: dict | None = None, seed: int = 0,
                   try_hub: bool = True) -> ReferencePair:
    import transformers

    reason = "not asked to try the hub"
    try:
        if not try_hub:
            raise LookupError(reason)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(f"openai-community/{name}")
        ours = GPT.from_pretrained(name)
        return ReferencePair(ours.eval(), theirs.eval(), f"OpenAI's {name} weights from the Hugging Face hub", True)
    except Exception as e:  # offline, or the hub is unreachable: fall back to random weights
        reason = str(e) if isinstance(e, LookupError) else type(e).__name__
    shape = offline_shape or dict(n_layer=2, n_head=4, n_embd=64, n_positions=256)
    theirs = random_hf_gpt2(seed=seed, noise=0.02, vocab_size=50257, **shape)
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = GPT.from_pretrained(tmp)
    return ReferencePair(ours.eval(), theirs, f"random weights, shape {shape} (hub not used: {reason})", False)
