import pytest
import torch

from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.lessons.probes import mlp_preactivations, residual_stream_std, unscale_residual_projections, zero_gradient_fraction

CFG = GPTConfig(block_size=32, vocab_size=512, n_layer=6, n_head=2, n_embd=64)


def test_residual_stream_std_follows_the_forward_pass():
    torch.manual_seed(0)
    model = GPT(CFG)
    idx = torch.randint(0, 512, (2, 16))
    stds = residual_stream_std(model, idx)
    assert len(stds) == CFG.n_layer + 1
    # the last entry is the stream the final LayerNorm sees: ln_f of it, through the head, is the model's output
    with torch.no_grad():
        pos = torch.arange(16)
        x = model.transformer.wte(idx) + model.transformer.wpe(pos)
        for block in model.transformer.h:
            x = block(x)
    assert stds[-1] == pytest.approx(x.std().item())
    assert model.lm_head(model.transformer.ln_f(x)).allclose(model(idx)[0])


def test_without_the_scaling_the_residual_projections_are_sqrt_2n_larger():
    torch.manual_seed(0)
    scaled = GPT(CFG)
    unscaled = unscale_residual_projections(GPT(CFG))
    w_scaled = scaled.transformer.h[0].mlp.c_proj.weight.std().item()
    w_unscaled = unscaled.transformer.h[0].mlp.c_proj.weight.std().item()
    assert w_unscaled == pytest.approx(0.02, rel=0.05)
    assert w_unscaled / w_scaled == pytest.approx((2 * CFG.n_layer) ** 0.5, rel=0.05)
    idx = torch.randint(0, 512, (2, 16))
    assert residual_stream_std(unscaled, idx)[-1] > 2 * residual_stream_std(scaled, idx)[-1]


def test_relu_kills_the_gradient_of_negative_inputs_gelu_does_not():
    x = torch.tensor([-3.0, -1.0, -0.1, 0.5, 2.0])
    assert zero_gradient_fraction(torch.nn.ReLU(), x) == pytest.approx(3 / 5)
    assert zero_gradient_fraction(torch.nn.GELU(approximate="tanh"), x) == 0.0


def test_mlp_preactivations_are_what_the_gelu_receives():
    torch.manual_seed(0)
    model = GPT(CFG)
    idx = torch.randint(0, 512, (1, 8))
    seen = []
    hook = model.transformer.h[2].mlp.gelu.register_forward_hook(lambda m, inp, out: seen.append(inp[0].flatten()))
    with torch.no_grad():
        model(idx)
    hook.remove()
    pre = mlp_preactivations(model, idx, layer=2)
    assert pre.numel() == 8 * 4 * CFG.n_embd and torch.allclose(pre, seen[0])
