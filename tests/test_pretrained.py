"""GPT.from_pretrained against Hugging Face transformers, offline: a randomly initialised
GPT2LMHeadModel is saved to a temporary folder and loaded back into our GPT."""

import pytest
import torch

transformers = pytest.importorskip("transformers")  # a dev dependency: always present under `make test`

from gpt2lab.model import GPT  # noqa: E402
from gpt2lab.pretrained import random_hf_gpt2  # noqa: E402


def hf_model(tmp_path, safe=True, vocab_size=500):
    model = random_hf_gpt2(seed=0, noise=0.05, vocab_size=vocab_size, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    model.save_pretrained(tmp_path, safe_serialization=safe)
    return model


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_bin"])
def test_logits_and_loss_match_transformers(tmp_path, no_network, safe):
    ref = hf_model(tmp_path, safe=safe)
    ours = GPT.from_pretrained(tmp_path).eval()
    assert ours.config.n_layer == 3 and ours.config.vocab_size == 500 and ours.config.block_size == 64
    idx = torch.randint(0, 500, (2, 40))
    with torch.no_grad():
        out = ref(idx, labels=idx)
        logits, _ = ours(idx)
        # HF shifts labels inside; our causal logits for idx[:, :-1] are its first T-1 positions
        _, loss = ours(idx[:, :-1], idx[:, 1:])
    assert (logits - out.logits).abs().max().item() <= 1e-5
    assert abs(loss.item() - out.loss.item()) <= 1e-5


@pytest.mark.parametrize("attn", ["naive", "flash"])
def test_padded_vocab_gives_same_logits_on_real_tokens(tmp_path, attn):
    ref = hf_model(tmp_path)
    ours = GPT.from_pretrained(tmp_path, vocab_size=512, attn=attn).eval()
    assert ours.lm_head.weight.shape == (512, 48)
    idx = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        diff = (ours(idx)[0][..., :500] - ref(idx).logits).abs().max().item()
    assert diff <= 1e-5


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        GPT.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"n_positions": 8, "vocab_size": 10, "n_layer": 1, "n_head": 1, "n_embd": 4}')
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        GPT.from_pretrained(tmp_path)


def test_shrinking_vocab_is_refused(tmp_path):
    hf_model(tmp_path)
    with pytest.raises(ValueError, match="only pad vocab_size"):
        GPT.from_pretrained(tmp_path, vocab_size=400)


def test_reference_pair_offline_falls_back_to_random_weights(no_network):
    from gpt2lab.pretrained import reference_pair

    pair = reference_pair("gpt2", offline_shape=dict(n_layer=1, n_head=2, n_embd=16, n_positions=32))
    assert not pair.pretrained and "random weights" in pair.source
    idx = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        diff = (pair.ours(idx)[0] - pair.theirs(idx).logits).abs().max().item()
    assert diff <= 1e-5
