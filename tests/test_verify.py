"""engine/verify.py (`python -m gpt2lab verify DIR`): every shard's size and sha256 against the manifest, each
bad shard named, the shards only read."""

import argparse
import hashlib

import numpy as np
import pytest

from gpt2lab.base.errors import UserError
from gpt2lab.engine import data
from gpt2lab.engine.verify import add_arguments, run, verify


@pytest.fixture
def prepared(tmp_path):
    """Three shards of known tokens (shard 0 is validation) and a complete manifest."""
    folder = tmp_path / "shards"
    folder.mkdir()
    shards = [np.arange(10, dtype=np.uint16), np.arange(100, 130, dtype=np.uint16), np.full(7, 50256, np.uint16)]
    entries = [data.write_shard(folder, i, t) for i, t in enumerate(shards)]
    data.write_manifest(folder, {"format": data.FORMAT, "shards": entries, "complete": True})
    return folder


def flip_one_byte(path):
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0xFF
    path.write_bytes(bytes(raw))  # same size: only the sha256 can tell


def test_a_good_dataset_counts_its_shards_and_tokens(prepared):
    assert verify(prepared, progress=False) == {"shards": 3, "tokens": 10 + 30 + 7}


def test_the_manifest_hashes_are_the_bytes_sha256(prepared):
    """An independent check of what verify compares against: hashlib over the file, uint16 little-endian."""
    manifest = data.read_manifest(prepared)
    first = prepared / manifest["shards"][0]["file"]
    assert manifest["shards"][0]["sha256"] == hashlib.sha256(np.arange(10, dtype="<u2").tobytes()).hexdigest()
    assert first.stat().st_size == 20


def test_a_flipped_byte_is_found_and_named(prepared):
    bad = prepared / data.shard_name(1)
    flip_one_byte(bad)
    before = bad.read_bytes()
    with pytest.raises(UserError, match=rf"^shard {bad} is corrupt: its sha256 does not match the manifest; "
                                        r"1 of 3 shards are bad: re-copy them"):
        verify(prepared, progress=False)
    assert bad.read_bytes() == before  # verify reads, never repairs or deletes


def test_every_bad_shard_is_counted(prepared):
    flip_one_byte(prepared / data.shard_name(0))
    (prepared / data.shard_name(2)).unlink()
    with pytest.raises(UserError) as e:
        verify(prepared, progress=False)
    assert "(and 1 more bad shard(s)); 2 of 3 shards are bad" in str(e.value)
    assert str(e.value).startswith(f"shard {prepared / data.shard_name(0)} is corrupt")


def test_a_truncated_shard_is_named_by_its_size(prepared):
    path = prepared / data.shard_name(2)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(UserError, match="truncated or corrupt: 12 bytes, manifest says 14"):
        verify(prepared, progress=False)


def test_an_unfinished_prepare_is_refused(prepared):
    manifest = data.read_manifest(prepared)
    data.write_manifest(prepared, {**manifest, "complete": False})
    with pytest.raises(UserError, match="unfinished prepare"):
        verify(prepared, progress=False)


def test_a_folder_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a prepared dataset"):
        verify(tmp_path, progress=False)


def test_the_command_prints_one_line(prepared, capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert run(p.parse_args([str(prepared), "--no-progress"])) == 0
    assert capsys.readouterr().out == f"{prepared}: all 3 shards match the manifest (47 tokens, sha256 checked)\n"
