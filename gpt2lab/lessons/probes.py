"""Looking inside a GPT at initialization: the measurements chapter 2 plots.

Each function answers one question about `gpt2lab.engine.model` as written, so the book's figures come from the
model itself rather than from a re-implementation in a notebook.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gpt2lab.engine.model import GPT


@torch.no_grad()
def residual_stream_std(model: GPT, idx: torch.Tensor) -> list[float]:
    """Standard deviation of the residual stream after the embeddings and after each block (n_layer + 1 values).

    Every block adds its attention and MLP outputs to the stream; nothing normalizes the stream itself
    (pre-LayerNorm), so its scale after block l is the sum of what all earlier blocks wrote."""
    pos = torch.arange(idx.size(1), device=idx.device)
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    stds = [x.std().item()]
    for block in model.transformer.h:
        x = block(x)
        stds.append(x.std().item())
    return stds


@torch.no_grad()
def unscale_residual_projections(model: GPT, seed: int = 0) -> GPT:
    """Re-draw the residual projections (attn.c_proj, mlp.c_proj) from N(0, 0.02) without GPT-2's
    1/sqrt(2 * n_layer) factor: the same model, initialized as if the scaling did not exist."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear) and getattr(module, "RESIDUAL_SCALE", False):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.02)
    return model


@torch.no_grad()
def mlp_preactivations(model: GPT, idx: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """The inputs of block `layer`'s GELU (its c_fc outputs) for the tokens `idx`, flattened."""
    pos = torch.arange(idx.size(1), device=idx.device)
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    for block in model.transformer.h[:layer]:
        x = block(x)
    block = model.transformer.h[layer]
    x = x + block.attn(block.ln_1(x))
    return block.mlp.c_fc(block.ln_2(x)).flatten()


def zero_gradient_fraction(activation: nn.Module, inputs: torch.Tensor) -> float:
    """Share of `inputs` where the activation's derivative is exactly 0: units that learn nothing from them."""
    x = inputs.detach().clone().requires_grad_(True)
    activation(x).sum().backward()
    return (x.grad == 0).float().mean().item()
