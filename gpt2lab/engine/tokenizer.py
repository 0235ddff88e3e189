"""The GPT-2 BPE tokenizer, offline.

tiktoken's `get_encoding("gpt2")` downloads OpenAI's `encoder.json` and `vocab.bpe` on first use.
We ship those two files as package data and hand their paths to tiktoken's own loader together with
the sha256 values tiktoken expects, so tiktoken itself verifies the bytes and no network is needed.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

# The sha256 values tiktoken checks for the "gpt2" encoding (tiktoken_ext/openai_public.py).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257


def _asset(*parts: str) -> str:
    return str(resources.files("gpt2lab").joinpath("assets", *parts))


@functools.lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """GPT-2's encoding, built from the packaged BPE files (verified by tiktoken, no network)."""
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=_asset("gpt2_bpe", "vocab.bpe"),
        encoder_json_file=_asset("gpt2_bpe", "encoder.json"),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
    )


def encode(text: str) -> list[int]:
    """Tokens of plain text; special-token strings inside `text` are treated as ordinary text."""
    return get_encoding().encode_ordinary(text)


def decode(tokens) -> str:
    return get_encoding().decode(list(tokens))


def encode_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of a batch of documents as one uint16 array, each document preceded by <|endoftext|>,
    plus each document's length (its <|endoftext|> included).

    Worker processes of `gpt2lab prepare` run this: one compact array pickles far faster than lists of
    Python ints, and this module imports no torch, so workers start quickly.
    """
    encode = get_encoding().encode_ordinary
    ids = [encode(t) for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in ids), dtype=np.int64, count=len(ids))
    out = np.empty(int(lengths.sum()), dtype=np.uint16)
    pos = 0
    for doc, n in zip(ids, lengths):
        out[pos] = EOT_ID
        out[pos + 1 : pos + n] = doc
        pos += n
    return out, lengths
