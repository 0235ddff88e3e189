"""The chunked head + cross-entropy computes exactly what the unfused path computes, in less memory."""

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.engine.knobs import padded_vocab_size
from gpt2lab.engine.losses import VARIANTS, chunk_rows, chunked_cross_entropy, full_cross_entropy
from gpt2lab.engine.model import GPT, get_config


def grads(loss_fn, *tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors[:2]] + list(tensors[2:])
    loss = loss_fn(*tensors)
    (2.5 * loss).backward()  # a non-unit incoming gradient: backward must scale, not assume 1
    return loss.detach(), tensors[0].grad, tensors[1].grad


PATHS = [(v, False) for v in VARIANTS] + [("forward", True)]  # (variant, compiled chunk arithmetic)


@pytest.mark.parametrize("variant,compiled", PATHS)
@pytest.mark.parametrize("rows", [7, 64, 1000])  # ragged last chunk, several chunks, one chunk
def test_loss_and_gradients_equal_the_unfused_path(variant, compiled, rows):
    torch.manual_seed(0)
    vocab = padded_vocab_size(257, multiple=64)  # 320 rows: 63 padded ones that no target uses
    h, w = torch.randn(3, 40, 48, dtype=torch.float64), 0.3 * torch.randn(vocab, 48, dtype=torch.float64)
    t = torch.randint(0, 257, (3, 40))
    ref = grads(full_cross_entropy, h, w, t)
    got = grads(lambda a, b, c: chunked_cross_entropy(a, b, c, rows=rows, variant=variant, compiled=compiled),
                h, w, t)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    assert got[2][257:].abs().max() > 0  # the padded rows get their push towards -inf too


@pytest.mark.parametrize("variant,compiled", PATHS)
def test_fp32_and_bf16_autocast_match_the_unfused_path(variant, compiled):
    torch.manual_seed(1)
    h, w, t = torch.randn(128, 32), 0.1 * torch.randn(512, 32), torch.randint(0, 512, (128,))

    def fused(a, b, c):
        return chunked_cross_entropy(a, b, c, variant=variant, compiled=compiled)

    torch.testing.assert_close(grads(fused, h, w, t), grads(full_cross_entropy, h, w, t), rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = grads(full_cross_entropy, h, w, t)
        got = grads(fused, h, w, t)
    assert got[1].dtype == got[2].dtype == torch.float32  # gradients in the inputs' dtypes, as autograd gives
    assert got[0].dtype == torch.float32  # the loss is taken in float32, as F.cross_entropy does under autocast
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-6)  # the same bf16 logits
    for g, r in zip(got[1:], ref[1:]):  # bf16 matmuls, summed over chunks in another order
        assert (g - r).abs().max() <= 0.02 * r.abs().max()


def test_gpt_chunked_loss_equals_full_for_loss_and_every_parameter_gradient():
    """Through the whole model: hidden states, the head weight and the tied embedding get the same gradients."""
    torch.manual_seed(0)
    cfg = get_config("test", vocab_size=padded_vocab_size(500, 64), attn="naive")  # 512 rows, 12 padded
    full = GPT(cfg).double()
    chunked = GPT(cfg.__class__(**{**cfg.__dict__, "loss": "chunked"})).double()
    chunked.load_state_dict(full.state_dict())
    x, y = torch.randint(0, 500, (3, 32)), torch.randint(0, 500, (3, 32))
    logits, loss_full = full(x, y)
    none, loss_chunked = chunked(x, y)
    assert logits.shape == (3, 32, 512) and none is None  # the fused path never forms the logits
    loss_full.backward()
    loss_chunked.backward()
    torch.testing.assert_close(loss_chunked, loss_full, rtol=1e-12, atol=1e-12)
    for (name, a), (_, b) in zip(full.named_parameters(), chunked.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert chunked.transformer.wte.weight is chunked.lm_head.weight  # still tied: one gradient for both uses


def test_without_targets_every_loss_still_gives_logits():
    """Sampling and HellaSwag call model(idx) and need the logits, whichever loss trains the model."""
    torch.manual_seed(0)
    cfg = get_config("test")
    full = GPT(cfg)
    chunked = GPT(cfg.__class__(**{**cfg.__dict__, "loss": "chunked"}))
    chunked.load_state_dict(full.state_dict())
    x = torch.randint(0, cfg.vocab_size, (2, 8))
    (a, none_a), (b, none_b) = full(x), chunked(x)
    torch.testing.assert_close(b, a)
    assert none_a is None and none_b is None
    g = torch.Generator().manual_seed(3)
    out = chunked.generate(x, 4, generator=g)
    assert torch.equal(out, full.generate(x, 4, generator=torch.Generator().manual_seed(3)))


def test_no_grad_computes_no_gradients():
    h, w, t = torch.randn(64, 16), torch.randn(100, 16), torch.randint(0, 100, (64,))
    with torch.no_grad():
        loss = chunked_cross_entropy(h.requires_grad_(), w, t)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(h.detach() @ w.t(), t))


def test_chunked_loss_under_torch_compile():
    torch.manual_seed(0)
    h, w, t = torch.randn(96, 32), 0.1 * torch.randn(256, 32), torch.randint(0, 256, (96,))
    compiled = torch.compile(chunked_cross_entropy)
    torch.testing.assert_close(grads(compiled, h, w, t), grads(full_cross_entropy, h, w, t), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_model_compiles_the_chunk_arithmetic_and_matches_the_eager_model(monkeypatch):
    """GPT.forward tells the loss whether it is being compiled; the compiled model's loss and gradients equal the
    eager model's, and it went through the compiled chunk arithmetic (the loss itself stays out of the graph)."""
    import gpt2lab.engine.losses as losses

    calls = []
    real = losses._compiled_chunk_math
    monkeypatch.setattr(losses, "_compiled_chunk_math", lambda: calls.append(1) or real())
    torch.manual_seed(0)
    cfg = get_config("test", loss="chunked")
    eager = GPT(cfg)
    compiled_model = GPT(cfg)
    compiled_model.load_state_dict(eager.state_dict())
    x, y = torch.randint(0, cfg.vocab_size, (4, 32)), torch.randint(0, cfg.vocab_size, (4, 32))
    _, a = eager(x, y)
    assert not calls  # an eager model keeps the loss eager
    _, b = torch.compile(compiled_model)(x, y)
    assert calls  # the compiled model took the compiled path
    a.backward()
    b.backward()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(eager.named_parameters(), compiled_model.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunk_rows():
    assert chunk_rows(65536, 768, 50304) == 4096  # GPT-2 at B=64, T=1024: 16 chunks
    assert chunk_rows(512, 96, 50257) == 256  # cpu scale (B=4, T=128): 2 chunks, none thinner than 256 rows
    assert chunk_rows(100, 512, 256) == 100  # a vocabulary no wider than the hidden states: one chunk
    assert chunk_rows(5, 8, 4096) == 5  # fewer rows than the minimum: one chunk
    assert chunk_rows(5, 8, 4096, min_rows=1) == 1  # never an empty chunk
    with pytest.raises(ValueError, match="variant"):
        chunked_cross_entropy(torch.randn(2, 4), torch.randn(8, 4), torch.zeros(2, dtype=torch.long), variant="x")


def capped_reference(logits, targets, cap):
    """The soft cap written as the recipe's source states it, then PyTorch's own cross-entropy."""
    capped = cap * torch.tanh(logits / cap)
    return F.cross_entropy(capped.reshape(-1, capped.size(-1)), targets.reshape(-1)), capped


@pytest.mark.parametrize("cap", [30.0, 2.0, 1e4])  # 1e4: far beyond exp's range if the softmax were not shifted
def test_capped_cross_entropy_equals_cap_then_cross_entropy(cap):
    from gpt2lab.engine.losses import capped_cross_entropy

    torch.manual_seed(0)
    z = (torch.randn(2, 7, 301, dtype=torch.float64) * 20).requires_grad_()
    t = torch.randint(0, 301, (2, 7))
    (want, _), got = capped_reference(z, t, cap), capped_cross_entropy(z, t, cap)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g_want,) = torch.autograd.grad(want * 3.0, z)
    (g_got,) = torch.autograd.grad(got * 3.0, z)  # a scaled loss: the incoming gradient is applied
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-14)
    assert g_want.abs().max() > 1e-4


def test_capped_cross_entropy_under_bf16_autocast_and_without_grad():
    from gpt2lab.engine.losses import capped_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(64, 32, requires_grad=True)
    w = (torch.randn(512, 32) * 2).requires_grad_()
    t = torch.randint(0, 512, (64,))
    with torch.autocast("cpu", torch.bfloat16):
        z = h @ w.t()
        want, _ = capped_reference(z, t, 30.0)  # the three operations run in bf16 here, the cross-entropy in fp32
        got = capped_cross_entropy(z, t, 30.0)
    assert z.dtype == torch.bfloat16 and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    exact, _ = capped_reference(z.detach().double(), t, 30.0)  # the same bf16 logits, capped in float64
    assert abs(got.item() - exact.item()) <= abs(want.item() - exact.item())  # the cap in fp32: closer, not further
    (gw_want,) = torch.autograd.grad(want, w, retain_graph=True)  # z is shared
    (gw_got,) = torch.autograd.grad(got, w)
    torch.testing.assert_close(gw_got, gw_want, rtol=0.05, atol=5e-4)
    with torch.no_grad():
        loss = capped_cross_entropy(z.detach(), t, 30.0)
    torch.testing.assert_close(loss, got.detach())


def test_a_capped_gpt_trains_through_the_fused_cap_like_the_written_one():
    cfg = get_config("test", logit_softcap=5.0)
    torch.manual_seed(0)
    model = GPT(cfg).double()
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    y = torch.randint(0, cfg.vocab_size, (2, 16))
    logits, loss = model(x, y)
    want, capped = capped_reference(F.linear(model.features(x), model.lm_head.weight), y, 5.0)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    assert logits is None  # a fused loss: the capped logits are never formed whole
    torch.testing.assert_close(model(x)[0], capped, rtol=1e-12, atol=1e-12)  # sampling's path: the head caps
    got = torch.autograd.grad(loss, list(model.parameters()))
    wanted = torch.autograd.grad(want, list(model.parameters()))
    for a, b in zip(got, wanted):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_capped_cross_entropy_leaves_its_logits_as_they_were(dtype):
    from gpt2lab.engine.losses import capped_cross_entropy

    torch.manual_seed(0)
    z = torch.randn(40, 97, dtype=dtype) * 10  # 40 rows: more than one block on a CPU
    before = z.clone()
    capped_cross_entropy(z.requires_grad_(), torch.randint(0, 97, (40,)), 30.0).backward()
    assert torch.equal(z.detach(), before)


def test_capped_cross_entropy_bf16_gradient_is_the_float32_one_rounded_once():
    """On a CPU the stored gradient has the logits' dtype; a loss weight (1/3: grad accumulation) is applied in
    float32 before rounding, as the unfused path's float32 cross-entropy then cast back to bf16 does."""
    from gpt2lab.engine.losses import capped_cross_entropy

    torch.manual_seed(0)
    z32 = torch.randn(70, 211) * 20
    t = torch.randint(0, 211, (70,))
    z16 = z32.bfloat16().requires_grad_()
    (g16,) = torch.autograd.grad(capped_cross_entropy(z16, t, 30.0) / 3, z16)
    z = z16.detach().float().requires_grad_()
    (g32,) = torch.autograd.grad(capped_reference(z, t, 30.0)[0] / 3, z)
    assert g16.dtype == torch.bfloat16
    torch.testing.assert_close(g16.float(), g32, rtol=2 ** -7, atol=1e-7)  # bf16: 8 significant bits
    assert g16.float().abs().max() > 1e-3
