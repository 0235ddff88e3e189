import hashlib

import pytest

from gpt2lab.engine import corpus
from gpt2lab.engine import tokenizer


def test_reference_sentence(no_network):
    tokenizer.get_encoding.cache_clear()
    assert tokenizer.encode("Hello, I'm a language model,") == [15496, 11, 314, 1101, 257, 3303, 2746, 11]


def test_end_of_text_id():
    enc = tokenizer.get_encoding()
    assert enc.eot_token == 50256 == tokenizer.EOT_ID
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    # as ordinary text the marker is just characters, never the special id
    assert 50256 not in tokenizer.encode("<|endoftext|>")


def test_tiny_shakespeare_round_trip():
    text = corpus.load_text("tinyshakespeare")
    assert len(text) == 1115394
    tokens = tokenizer.encode(text)
    assert len(tokens) == 338025
    assert tokenizer.decode(tokens) == text


def test_packaged_files_are_the_official_ones():
    # the same sha256 values tiktoken checks when it downloads the files itself
    for name, digest in [("vocab.bpe", tokenizer.VOCAB_BPE_SHA256), ("encoder.json", tokenizer.ENCODER_JSON_SHA256)]:
        data = open(tokenizer._asset("gpt2_bpe", name), "rb").read()
        assert hashlib.sha256(data).hexdigest() == digest


def test_tampered_file_is_rejected(tmp_path, monkeypatch):
    src = tokenizer._asset("gpt2_bpe", "vocab.bpe")
    bad = tmp_path / "vocab.bpe"
    bad.write_bytes(open(src, "rb").read().replace(b"\xc4\xa0t", b"\xc4\xa0x", 1))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    with pytest.raises(ValueError, match="Hash mismatch"):
        data_gym_to_mergeable_bpe_ranks(str(bad), tokenizer._asset("gpt2_bpe", "encoder.json"),
                                        tokenizer.VOCAB_BPE_SHA256, tokenizer.ENCODER_JSON_SHA256)


def test_unknown_corpus():
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        corpus.load_text("nope")
