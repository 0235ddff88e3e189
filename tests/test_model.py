import math

import pytest
import torch

from gpt2lab.engine.model import GPT, GPTConfig, get_config

SMALL = GPTConfig(block_size=32, vocab_size=96, n_layer=2, n_head=4, n_embd=32)


def test_gpt2_124m_parameter_count():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPT(get_config("gpt2"))
    assert model.num_params() == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight


def test_default_config_is_gpt2_124m():
    c = GPTConfig()
    assert (c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd) == (1024, 50257, 12, 12, 768)


def test_forward_shapes_and_initial_loss():
    model = GPT(SMALL)
    idx = torch.randint(0, SMALL.vocab_size, (3, 20))
    targets = torch.randint(0, SMALL.vocab_size, (3, 20))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 20, SMALL.vocab_size)
    # a fresh model predicts roughly uniformly: loss on unrelated targets close to ln(vocab)
    assert abs(loss.item() - math.log(SMALL.vocab_size)) < 0.1
    assert model(idx)[1] is None


def test_init_scales_residual_projections():
    cfg = GPTConfig(block_size=64, vocab_size=256, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    block = model.transformer.h[0]
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    for w in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
        assert w.std().item() == pytest.approx(scaled, rel=0.05)
    for w in (block.attn.c_attn.weight, block.mlp.c_fc.weight, model.transformer.wte.weight):
        assert w.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.c_attn.bias.abs().max().item() == 0


def test_naive_and_flash_attention_agree():
    torch.manual_seed(1)
    naive = GPT(GPTConfig(**{**SMALL.__dict__, "attn": "naive"})).double()
    flash = GPT(GPTConfig(**{**SMALL.__dict__, "attn": "flash"})).double()
    flash.load_state_dict(naive.state_dict())
    idx = torch.randint(0, SMALL.vocab_size, (2, 32))
    ln, l_loss = naive(idx, idx)
    fl, f_loss = flash(idx, idx)
    torch.testing.assert_close(fl, ln, atol=1e-10, rtol=1e-9)
    l_loss.backward()
    f_loss.backward()
    for (name, a), b in zip(naive.named_parameters(), flash.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-10, rtol=1e-8, msg=name)


def test_attention_is_causal():
    model = GPT(SMALL)
    idx = torch.randint(0, SMALL.vocab_size, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % SMALL.vocab_size
    torch.testing.assert_close(model(idx)[0][:, :10], model(changed)[0][:, :10])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=30, n_head=4), "divisible by n_head"),
        (dict(n_layer=0), "n_layer must be positive"),
        (dict(attn="fast"), "attn must be one of"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(dropout=-0.1), "dropout must be in"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_dropout_acts_in_training_only_and_adds_no_weights():
    torch.manual_seed(0)
    plain = GPT(get_config("test"))
    dropped = GPT(get_config("test", dropout=0.3))
    assert list(dropped.state_dict()) == list(plain.state_dict())  # Hugging Face's names and nothing more
    dropped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 512, (2, 16))
    a, b = dropped(idx)[0], dropped(idx)[0]
    assert not torch.allclose(a, b)  # training mode: a fresh mask each call
    dropped.eval()
    torch.testing.assert_close(dropped(idx)[0], plain(idx)[0])  # eval mode: exactly the model without dropout


def test_input_errors():
    model = GPT(SMALL)
    with pytest.raises(ValueError, match="sequence length 33 exceeds block_size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 96\)"):
        model(torch.full((1, 4), 96))
    with pytest.raises(ValueError, match=r"token ids must lie"):
        model(torch.full((1, 4), -1))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset 'gpt5'"):
        get_config("gpt5")
    assert get_config("gpt2", vocab_size=50304).vocab_size == 50304


def test_generate_is_reproducible_with_a_generator():
    model = GPT(SMALL)
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(42))
    torch.manual_seed(999)  # the global RNG must not matter
    b = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(42))
    c = model.generate(prompt, 12, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(7))
    assert a.shape == (1, 15) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_top_k_1_and_temperature_0_are_greedy():
    model = GPT(SMALL)
    prompt = torch.tensor([[5, 6]])
    greedy = model.generate(prompt, 5, temperature=0)
    top1 = model.generate(prompt, 5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, top1)
    idx = prompt
    for _ in range(5):  # reference: argmax of the last position, by hand
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, idx)


def test_generate_crops_context_to_block_size():
    model = GPT(SMALL)
    out = model.generate(torch.zeros(1, 30, dtype=torch.long), 10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 40)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 1, temperature=-1)
