from dataclasses import asdict

import pytest
import torch

from gpt2lab.run import checkpoint
from gpt2lab.cli.main import main
from gpt2lab.base.errors import UserError
from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.run.checkpoint import load_model, unwrap_state_dict
from gpt2lab.run.sample import decode_text, sample
from gpt2lab.engine.tokenizer import encode

CFG = GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture
def model():
    torch.manual_seed(1)
    return GPT(CFG).eval()


@pytest.mark.slow
def test_same_seed_same_text_other_seed_other_text(model):
    a = sample(model, "ROMEO:", tokens=12, seed=3, num_samples=2)
    torch.manual_seed(99)  # the global RNG must not matter
    b = sample(model, "ROMEO:", tokens=12, seed=3, num_samples=2)
    c = sample(model, "ROMEO:", tokens=12, seed=4, num_samples=2)
    assert a == b and a != c
    assert all(t.startswith("ROMEO:") for t in a) and a[0] != a[1]  # rows draw different tokens


@pytest.mark.slow
def test_checkpoint_round_trip(model, tmp_path):
    checkpoint.save({"model": model.state_dict(), "model_config": asdict(CFG), "step": 5}, tmp_path)
    loaded = load_model(tmp_path)  # the run folder, as `--checkpoint RUN` passes it
    assert sample(loaded, "Hi", tokens=10, seed=0) == sample(model, "Hi", tokens=10, seed=0)


@pytest.mark.slow
def test_compiled_and_ddp_prefixes_load(model, tmp_path):
    compiled_keys = torch.compile(model).state_dict()  # wrapping only: nothing is compiled until called
    assert all(k.startswith("_orig_mod.") for k in compiled_keys)
    wrapped = {"module." + k: v for k, v in compiled_keys.items()}
    assert unwrap_state_dict(wrapped).keys() == model.state_dict().keys()
    torch.save({"model": compiled_keys, "model_config": asdict(CFG)}, tmp_path / "c.pt")  # a checkpoint file
    loaded = load_model(tmp_path / "c.pt")
    assert sample(loaded, "Hi", tokens=8, seed=1) == sample(model, "Hi", tokens=8, seed=1)


def test_not_a_model_checkpoint_is_one_clear_error(tmp_path):
    torch.save({"model": {}, "model_config": asdict(CFG)}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match="--checkpoint .*empty.pt: not a gpt2lab model checkpoint"):
        load_model(tmp_path / "empty.pt")


def test_cut_utf8_is_shown_as_bytes_not_replacement_chars():
    ids = encode("it’s")  # ’ is the three bytes e2 80 99: GPT-2 spreads them over two tokens
    assert ids == [270, 447, 247, 82]
    assert decode_text(ids) == "it’s"
    assert decode_text(ids[:2]) == "it\\xe2\\x80"  # cut after the first of the two: visible bytes, no "\ufffd"
    assert decode_text([50300, *ids]) == "it’s"  # ids of a padded vocabulary's extra rows are not tokens


@pytest.mark.slow
def test_cli_prints_seeded_samples(model, tmp_path, capsys):
    checkpoint.save({"model": model.state_dict(), "model_config": asdict(CFG), "step": 5}, tmp_path)
    argv = ["sample", "--checkpoint", str(tmp_path), "--prompt", "ROMEO:", "--tokens", "6", "--seed", "7",
            "--num-samples", "2"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert first.count("--- sample") == 2
    assert sample(model, "ROMEO:", tokens=6, seed=7, num_samples=2)[1] in first


@pytest.mark.parametrize("extra, message", [
    (["--tokens", "0"], "--tokens must be >= 1, got 0"),
    (["--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["--prompt", ""], "--prompt must not be empty"),
    (["--device", "nonsense"], "--device nonsense: "),
])
def test_cli_user_errors(model, tmp_path, capsys, extra, message):
    checkpoint.save({"model": model.state_dict(), "model_config": asdict(CFG), "step": 5}, tmp_path)
    assert main(["sample", "--checkpoint", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2lab sample: error: ") and message in err and err.count("\n") == 1


def test_cli_missing_sources(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "--checkpoint" in (err := capsys.readouterr().err) and "nowhere: no such file" in err
    assert main(["sample", "--pretrained", str(tmp_path / "nowhere")]) == 2
    assert "--pretrained" in capsys.readouterr().err
