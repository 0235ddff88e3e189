"""pretrained.load_gpt2 against Hugging Face transformers, offline: a randomly initialised
GPT2LMHeadModel is saved to a temporary folder and loaded back into our GPT."""

import socket

import pytest
import torch

transformers = pytest.importorskip("transformers")  # a dev dependency: always present under `make test`

from gpt2lab.engine.model import GPT  # noqa: E402
from gpt2lab.engine.pretrained import load_gpt2, random_hf_gpt2  # noqa: E402


def hf_model(tmp_path, safe=True, vocab_size=500):
    model = random_hf_gpt2(seed=0, noise=0.05, vocab_size=vocab_size, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    model.save_pretrained(tmp_path, safe_serialization=safe)
    return model


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_bin"])
def test_logits_and_loss_match_transformers(tmp_path, no_network, safe):
    ref = hf_model(tmp_path, safe=safe)
    ours = load_gpt2(tmp_path).eval()
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
    ours = load_gpt2(tmp_path, vocab_size=512, attn=attn).eval()
    assert ours.lm_head.weight.shape == (512, 48)
    idx = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        diff = (ours(idx)[0][..., :500] - ref(idx).logits).abs().max().item()
    assert diff <= 1e-5


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        load_gpt2(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"n_positions": 8, "vocab_size": 10, "n_layer": 1, "n_head": 1, "n_embd": 4}')
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_gpt2(tmp_path)


def test_shrinking_vocab_is_refused(tmp_path):
    hf_model(tmp_path)
    with pytest.raises(ValueError, match="only pad vocab_size"):
        load_gpt2(tmp_path, vocab_size=400)


def test_reference_pair_offline_falls_back_to_random_weights(fresh_probe, no_network):
    from gpt2lab.engine.pretrained import reference_pair

    pair = reference_pair("gpt2", offline_shape=dict(n_layer=1, n_head=2, n_embd=16, n_positions=32))
    assert not pair.pretrained and "random weights" in pair.source
    idx = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        diff = (pair.ours(idx)[0] - pair.theirs(idx).logits).abs().max().item()
    assert diff <= 1e-5


# ---------------------------------------------------------------- where OpenAI's weights come from, offline


@pytest.fixture
def fresh_probe(monkeypatch, tmp_path):
    """A new process's view: no decision cached, no weights variable, an empty Hugging Face cache."""
    import huggingface_hub.constants

    from gpt2lab.base import hub
    from gpt2lab.engine import pretrained

    for var in (*hub.OFFLINE_VARS, "HF_ENDPOINT", pretrained.WEIGHTS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    hub.forget()
    yield pretrained
    hub.forget()


def test_offline_without_weights_fails_at_once_with_the_variable_to_set(fresh_probe, no_network):
    with pytest.raises(ConnectionError, match="hub not reachable .*set GPT2LAB_GPT2_WEIGHTS"):
        load_gpt2("gpt2")
    pair = fresh_probe.reference_pair("gpt2", offline_shape=dict(n_layer=1, n_head=2, n_embd=16, n_positions=32))
    assert not pair.pretrained and "hub not reachable" in pair.source


def test_weights_variable_serves_gpt2_offline(fresh_probe, no_network, monkeypatch, tmp_path):
    folder = tmp_path / "gpt2-local"
    ref = random_hf_gpt2(seed=1, vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    ref.save_pretrained(folder)
    monkeypatch.setenv(fresh_probe.WEIGHTS_ENV, str(folder))
    ours = load_gpt2("gpt2").eval()  # the hub name resolves to the local folder
    pair = fresh_probe.reference_pair("gpt2")
    assert pair.pretrained and str(folder) in pair.source
    idx = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        assert (ours(idx)[0] - ref(idx).logits).abs().max().item() <= 1e-5
        assert (pair.ours(idx)[0] - pair.theirs(idx).logits).abs().max().item() <= 1e-5


def test_weights_variable_naming_a_wrong_folder_is_one_clear_error(fresh_probe, monkeypatch, tmp_path):
    from gpt2lab.base.errors import UserError

    monkeypatch.setenv(fresh_probe.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(UserError, match=f"GPT2LAB_GPT2_WEIGHTS={tmp_path}: not a Hugging Face GPT-2 folder"):
        load_gpt2("gpt2")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="neither model.safetensors nor pytorch_model.bin"):
        fresh_probe.gpt2_weights("gpt2")


def test_a_cached_snapshot_is_used_offline_and_a_partial_one_is_not(fresh_probe, no_network, tmp_path):
    """The Hugging Face cache layout (models--org--name/snapshots/REV + refs/main), as a download leaves it."""
    import huggingface_hub.constants

    repo = tmp_path / "hf-cache" / "models--openai-community--gpt2"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    random_hf_gpt2(seed=2, vocab_size=100, n_positions=16, n_embd=16, n_layer=1, n_head=2).save_pretrained(snapshot)
    assert huggingface_hub.constants.HF_HUB_CACHE == str(tmp_path / "hf-cache")
    folder, where = fresh_probe.gpt2_weights("gpt2")
    assert folder == snapshot and where == "the Hugging Face cache"
    (snapshot / "model.safetensors").unlink()  # an interrupted download: config only
    with pytest.raises(ConnectionError, match="hub not reachable"):
        fresh_probe.gpt2_weights("gpt2")
