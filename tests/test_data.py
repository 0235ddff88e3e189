import json

import numpy as np
import pytest

from gpt2lab.engine import data
from gpt2lab.engine import tokenizer
from gpt2lab.cli.main import main
from gpt2lab.base.errors import UserError
from gpt2lab.engine.prepare import prepare
from gpt2lab.engine.tokenizer import encode_documents

DOCS = [f"Document {i}: " + "lorem ipsum dolor sit amet " * (i % 9 + 1) for i in range(300)]
DOCS[7] = "a very long document " * 400  # spans several shards


def reference_stream(docs):
    return np.concatenate([[tokenizer.EOT_ID] + tokenizer.encode(t) for t in docs]).astype(np.uint16)


def read_all(folder, manifest):
    return np.concatenate([np.fromfile(folder / e["file"], dtype=np.uint16) for e in manifest["shards"]])


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(DOCS)))
    return path


def test_encode_documents_puts_eot_before_each_document():
    tokens, lengths = encode_documents(["Hello", "", "Hello, I'm a language model,"])
    assert tokens.tolist() == [50256, 15496, 50256, 50256, 15496, 11, 314, 1101, 257, 3303, 2746, 11]
    assert lengths.tolist() == [2, 1, 9]


def test_prepare_jsonl_round_trip(jsonl, tmp_path, no_network):
    out = tmp_path / "shards"
    manifest = prepare(str(jsonl), out, shard_size=1000, workers=1, progress=False)
    assert manifest["complete"] and manifest["shards"][0]["split"] == "val"
    assert {e["split"] for e in manifest["shards"][1:]} == {"train"}
    assert all(e["tokens"] == 1000 for e in manifest["shards"][:-1])
    np.testing.assert_array_equal(read_all(out, manifest), reference_stream(DOCS))


def test_prepare_parquet_with_worker_processes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS[:50]}), tmp_path / "docs.parquet")
    manifest = prepare(str(tmp_path / "docs.parquet"), tmp_path / "out", shard_size=500, workers=2, progress=False)
    np.testing.assert_array_equal(read_all(tmp_path / "out", manifest), reference_stream(DOCS[:50]))


def test_prepare_packaged_corpus_is_one_document(tmp_path):
    manifest = prepare("tinyshakespeare", tmp_path, shard_size=100_000, workers=1, progress=False)
    assert sum(e["tokens"] for e in manifest["shards"]) == 338025 + 1
    assert [e["tokens"] for e in manifest["shards"]] == [100_000, 100_000, 100_000, 38026]


def test_prepare_resumes_after_interruption(jsonl, tmp_path):
    full = prepare(str(jsonl), tmp_path / "a", shard_size=700, workers=1, progress=False)
    # simulate a crash after shard 3: later shards never written, manifest not complete
    out = tmp_path / "b"
    first = prepare(str(jsonl), out, shard_size=700, workers=1, progress=False)
    cut = dict(first, complete=False, shards=first["shards"][:4])
    data.write_manifest(out, cut)
    for e in first["shards"][4:]:
        (out / e["file"]).unlink()
    assert any(e["carry"] for e in cut["shards"])  # the cut falls inside a document
    resumed = prepare(str(jsonl), out, shard_size=700, workers=1, progress=False)
    assert resumed == full
    np.testing.assert_array_equal(read_all(out, resumed), reference_stream(DOCS))


def interrupted_copy(full_dir, out, listed, complete=False):
    """`out` as an interrupted prepare might leave it: every shard file of the full run there, the manifest
    listing only the first `listed` of them."""
    import shutil

    shutil.copytree(full_dir, out)
    whole = data.read_manifest(full_dir)
    data.write_manifest(out, {**whole, "complete": complete, "shards": whole["shards"][:listed]})
    return whole


def dead_pid():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.parametrize("state", ["more shards than listed", "a listed shard missing", "a listed shard cut short",
                                   "a finished dataset missing a shard", "killed in the first shard's write"])
def test_prepare_resumes_from_any_state_an_interruption_leaves(jsonl, tmp_path, capsys, state):
    from gpt2lab.engine.prepare import add_arguments, check_inputs
    import argparse

    full = prepare(str(jsonl), tmp_path / "full", shard_size=700, workers=1, progress=False)
    out = tmp_path / "out"
    files = [out / e["file"] for e in full["shards"]]
    if state == "more shards than listed":  # killed after a shard's rename, before the manifest's
        interrupted_copy(tmp_path / "full", out, 3)
    elif state == "a listed shard missing":  # before: the shards after it were kept, shard 1 written twice
        interrupted_copy(tmp_path / "full", out, 5)
        files[1].unlink()
    elif state == "a listed shard cut short":
        interrupted_copy(tmp_path / "full", out, 5)
        files[2].write_bytes(files[2].read_bytes()[:100])
    elif state == "a finished dataset missing a shard":  # before: returned as complete
        interrupted_copy(tmp_path / "full", out, len(files), complete=True)
        files[-2].unlink()
    else:  # no manifest yet, only the temporary file of shard 0 (before: the folder was refused)
        out.mkdir()
        (out / f".shard_000000.bin.{dead_pid()}.0123abcd.tmp").write_bytes(b"\x00" * 300)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    check_inputs(parser.parse_args(["--source", str(jsonl), "--out", str(out)]))  # the documented resume is allowed
    assert prepare(str(jsonl), out, shard_size=700, workers=1, progress=False) == full
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(f.name for f in files)])
    np.testing.assert_array_equal(read_all(out, full), reference_stream(DOCS))
    err = capsys.readouterr().err
    if state in ("a listed shard missing", "a listed shard cut short", "a finished dataset missing a shard"):
        assert err.count("\n") == 1 and "are written again" in err


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    from gpt2lab.base.atomic import abandoned_temporaries, temporary_name

    live = temporary_name(tmp_path / "shard_000000.bin")
    live.write_bytes(b"")
    dead = tmp_path / f".shard_000001.bin.{dead_pid()}.0123abcd.tmp"
    dead.write_bytes(b"")
    (tmp_path / ".notes.tmp").write_bytes(b"")  # not a name atomic_write makes
    assert abandoned_temporaries(tmp_path) == [dead]


def test_prepare_max_tokens_and_settings_mismatch(jsonl, tmp_path):
    m = prepare(str(jsonl), tmp_path, shard_size=1000, max_tokens=2500, workers=1, progress=False)
    assert [e["tokens"] for e in m["shards"]] == [1000, 1000, 500]
    with pytest.raises(UserError, match="prepared with other settings"):
        prepare(str(jsonl), tmp_path, shard_size=999, workers=1, progress=False)


def test_corrupt_and_truncated_shards_are_refused(jsonl, tmp_path):
    m = prepare(str(jsonl), tmp_path, shard_size=1000, workers=1, progress=False)
    shard = tmp_path / m["shards"][1]["file"]
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(raw)
    with pytest.raises(UserError, match=f"shard {shard} is corrupt"):
        data.open_shard(tmp_path, m["shards"][1])
    shard.write_bytes(raw[:-6])
    with pytest.raises(UserError, match=f"shard {shard} is truncated"):
        data.open_shard(tmp_path, m["shards"][1], verify=False)


@pytest.fixture
def shards(tmp_path):
    """Training data whose token at each position is easy to track: 6 train shards + val."""
    folder = tmp_path / "shards"
    folder.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(7):
        n = 3000 + 100 * i
        tokens = rng.integers(0, 50000, n).astype(np.uint16)
        tokens[rng.choice(n, 40, replace=False)] = tokenizer.EOT_ID  # document boundaries
        entries.append(data.write_shard(folder, i, tokens))
    data.write_manifest(folder, {"format": data.FORMAT, "shards": entries, "complete": True})
    return folder


def positions(loader, steps):
    """Which (epoch, shard, offset) input tokens each batch covered."""
    seen = []
    for _ in range(steps):
        s = loader.state
        start = s.pos + loader.rank * loader.B * loader.T
        seen.extend((s.epoch, s.shard, start + k) for k in range(loader.B * loader.T))
        loader.next_batch()
    return seen


def test_ranks_are_disjoint_and_cover_the_epoch(shards):
    world, B, T = 3, 2, 16
    loaders = [data.ShardLoader(shards, "train", B, T, rank=r, world_size=world, seed=5) for r in range(world)]
    steps = loaders[0].batches_per_epoch()
    seen = [positions(ld, steps) for ld in loaders]
    sets = [set(s) for s in seen]
    assert all(len(s) == steps * B * T for s in sets)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    union = set().union(*sets)
    order = loaders[0]._order(0)  # `shard` in the state indexes this epoch's shard order
    sizes = [loaders[0].entries[i]["tokens"] for i in order]
    expected = {(0, k, p) for k, n in enumerate(sizes) for p in range((n - 1) // (world * B * T) * world * B * T)}
    assert union == expected
    assert all(ld.state.epoch == 1 and ld.state.shard == 0 and ld.state.pos == 0 for ld in loaders)


def test_world_of_one_reads_the_same_tokens_as_two_ranks(shards):
    one = data.ShardLoader(shards, "train", 4, 8, seed=3)
    two = [data.ShardLoader(shards, "train", 2, 8, rank=r, world_size=2, seed=3) for r in range(2)]
    for _ in range(30):
        x, y = one.next_batch()
        parts = [ld.next_batch() for ld in two]
        assert np.array_equal(x.flatten(), np.concatenate([p[0].flatten() for p in parts]))
        assert np.array_equal(y.flatten(), np.concatenate([p[1].flatten() for p in parts]))


def test_targets_are_inputs_shifted_by_one(shards):
    x, y = data.ShardLoader(shards, "val", 3, 10, seed=0).next_batch()
    assert x.dtype == y.dtype == np.int64 or str(x.dtype) == "torch.int64"
    flat = data.open_shard(shards, data.read_manifest(shards)["shards"][0])[:31].astype(np.int64)
    assert x.flatten().tolist() == flat[:30].tolist() and y.flatten().tolist() == flat[1:31].tolist()


def test_permutation_is_per_epoch_and_seeded(shards):
    def epoch_tokens(seed, epoch):
        ld = data.ShardLoader(shards, "train", 2, 16, seed=seed)
        ld.load_state_dict({**ld.state_dict(), "epoch": epoch})
        return np.concatenate([ld.next_batch()[0].flatten() for _ in range(ld.batches_per_epoch())])

    a0, a1, b0 = epoch_tokens(1, 0), epoch_tokens(1, 1), epoch_tokens(2, 0)
    assert np.array_equal(a0, epoch_tokens(1, 0))
    assert not np.array_equal(a0, a1) and not np.array_equal(a0, b0)
    # a permutation moves whole documents: the multiset of tokens per shard is unchanged
    m = data.read_manifest(shards)["shards"]
    raw = data.open_shard(shards, m[1])
    perm = data.permute_documents(raw, np.random.default_rng(0))
    assert np.array_equal(np.sort(raw), np.sort(perm)) and not np.array_equal(raw, perm)
    assert perm[0] == tokenizer.EOT_ID or perm[0] == raw[0]


def test_resume_equals_uninterrupted_read(shards):
    ref = data.ShardLoader(shards, "train", 2, 32, seed=9)
    expected = [ref.next_batch()[0] for _ in range(150)]
    first = data.ShardLoader(shards, "train", 2, 32, seed=9)
    got = [first.next_batch()[0] for _ in range(77)]
    state = json.loads(json.dumps(first.state_dict()))  # survives serialization
    second = data.ShardLoader(shards, "train", 2, 32, seed=9)
    second.load_state_dict(state)
    got += [second.next_batch()[0] for _ in range(73)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    other = data.ShardLoader(shards, "train", 4, 32, seed=9)
    with pytest.raises(UserError, match="different global batch"):
        other.load_state_dict(state)


def test_a_position_saved_over_other_data_is_refused(shards, tmp_path):
    import shutil

    state = data.ShardLoader(shards, "train", 2, 32, seed=9).state_dict()
    assert state["data"] == data.fingerprint(data.read_manifest(shards))
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    assert data.ShardLoader(other, "train", 2, 32, seed=9).state_dict() == state  # the same data elsewhere: fine
    manifest = data.read_manifest(other)
    tokens = np.fromfile(other / manifest["shards"][3]["file"], dtype=np.uint16)
    tokens[:10] = 7  # the folder now holds other tokens (a re-prepare, another corpus)
    manifest["shards"][3] = data.write_shard(other, 3, tokens)
    data.write_manifest(other, manifest)
    with pytest.raises(UserError, match=rf"{other} is not the data the checkpoint was trained on: its manifest.json "
                                        r"lists other shards \(data fingerprint [0-9a-f]{12}, the checkpoint's "
                                        rf"{state['data'][:12]}\)"):
        data.ShardLoader(other, "train", 2, 32, seed=9).load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "data"}  # saved before the fingerprint existed
    data.ShardLoader(other, "train", 2, 32, seed=9).load_state_dict(old)


def test_loader_errors(shards, tmp_path):
    with pytest.raises(UserError, match="not a prepared dataset"):
        data.ShardLoader(tmp_path / "nothing", "train", 2, 8)
    with pytest.raises(UserError, match="too small for one batch"):
        data.ShardLoader(shards, "train", 64, 1024)


def test_prepare_cli_errors(tmp_path, capsys):
    assert main(["prepare", "--source", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt2lab prepare: error:") and "no such file" in err and "\n" not in err
    assert main(["prepare", "--source", "tinyshakespeare", "--out", str(tmp_path / "o"), "--shard-size", "0"]) == 2
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    assert main(["prepare", "--source", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o2")]) == 2
    assert "no 'text' column (columns: ['body'])" in capsys.readouterr().err


def test_unigram_baseline_matches_a_hand_computation(tmp_path):
    folder = tmp_path / "u"
    folder.mkdir()
    val = np.array([5, 5, 7], dtype=np.uint16)
    train = np.array([5, 5, 5, 7, 9, 9], dtype=np.uint16)
    entries = [data.write_shard(folder, 0, val), data.write_shard(folder, 1, train)]
    data.write_manifest(folder, {"format": data.FORMAT, "shards": entries, "complete": True})
    total = 6 + 50257  # add-one smoothing over the vocabulary
    expected = -(2 * np.log(4 / total) + np.log(2 / total)) / 3
    assert data.unigram_baseline(folder) == pytest.approx(expected)


def test_bigram_baseline_matches_a_hand_computation(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    val = np.array([5, 5, 7, 3], dtype=np.uint16)  # pairs (5,5), (5,7), (7,3); 3 never follows 7 in training
    train = np.array([5, 5, 5, 7, 9, 9], dtype=np.uint16)  # pairs (5,5) x2, (5,7), (7,9), (9,9)
    entries = [data.write_shard(folder, 0, val), data.write_shard(folder, 1, train)]
    data.write_manifest(folder, {"format": data.FORMAT, "shards": entries, "complete": True})
    total = 6 + 50257
    uni = {5: 4 / total, 7: 2 / total, 3: 1 / total}  # add-one, as unigram_baseline
    d = 0.75
    p55 = (2 - d) / 3 + d * 2 / 3 * uni[5]  # 5 is followed 3 times, by 2 different tokens
    p57 = (1 - d) / 3 + d * 2 / 3 * uni[7]
    p73 = d * 1 / 1 * uni[3]  # unseen pair: only the share given up by (7, 9)
    assert data.bigram_baseline(folder) == pytest.approx(-(np.log(p55) + np.log(p57) + np.log(p73)) / 3)
    assert data.bigram_baseline(folder) < data.unigram_baseline(folder)  # context helps even in a tiny table
    with pytest.raises(ValueError, match="discount"):
        data.bigram_baseline(folder, discount=1.0)


def test_baselines_score_exactly_the_tokens_a_val_loss_scores(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    val = np.arange(100, 141, dtype=np.uint16)  # 41 tokens: 3 batches of 2 x 4 read the first 24 pairs
    train = np.array([100, 101, 100, 101, 5, 5, 5, 7], dtype=np.uint16)
    entries = [data.write_shard(folder, 0, val), data.write_shard(folder, 1, train)]
    data.write_manifest(folder, {"format": data.FORMAT, "shards": entries, "complete": True})
    inputs, targets = data.val_loss_pairs(folder, batch_size=2, seq_len=4, steps=3)
    assert inputs.tolist() == list(range(100, 124)) and targets.tolist() == list(range(101, 125))
    # two ranks of batch 1 read, between them, what one process with batch 2 reads: the same pairs
    ranks = [data.ShardLoader(folder, "val", 1, 4, rank=r, world_size=2, verify=False) for r in range(2)]
    both = sorted(int(t) for _ in range(3) for loader in ranks for t in loader.next_batch()[1].flatten())
    assert both == sorted(data.val_loss_pairs(folder, 1, 4, 3, world_size=2)[1].tolist())
    total = len(train) + 50257
    expected = -np.log([(1 + (t == 101) * 2) / total for t in range(101, 125)]).mean()  # only 101 is in training
    assert data.unigram_baseline(folder, pairs=(inputs, targets)) == pytest.approx(expected)
    assert data.unigram_baseline(folder) != pytest.approx(expected)  # the whole shard is other tokens
    uni_101 = 3 / total
    p_100_101 = (2 - 0.75) / 2 + 0.75 * 1 / 2 * uni_101  # 100 is followed twice, always by 101
    p_101_102 = 0.75 * 2 / 2 * (1 / total)  # 101 is followed by 100 and 5, never by 102: the shared-out part
    rest = [1 / total] * 22  # no other input has a successor in training: the unigram alone
    assert data.bigram_baseline(folder, pairs=(inputs, targets)) == pytest.approx(
        -np.log([p_100_101, p_101_102, *rest]).mean())


def test_loader_checks_every_shard_size_when_it_starts(shards):
    m = data.read_manifest(shards)
    last = shards / m["shards"][-1]["file"]  # a training shard the loader would reach last
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(UserError, match=f"shard {last} is truncated or corrupt: 1000 bytes, manifest says "
                                        f"{2 * m['shards'][-1]['tokens']}; `python -m gpt2lab verify"):
        data.ShardLoader(shards, "train", 2, 16)
    data.ShardLoader(shards, "val", 2, 16)  # the validation split is whole
    last.unlink()
    with pytest.raises(UserError, match=f"shard {last} listed in the manifest is missing"):
        data.ShardLoader(shards, "train", 2, 16)


def test_loader_refuses_an_unfinished_prepare(shards):
    m = data.read_manifest(shards)
    data.write_manifest(shards, {**m, "complete": False})
    with pytest.raises(UserError, match=r"unfinished prepare \(manifest.json says complete: false, 7 shards so far\)"):
        data.ShardLoader(shards, "train", 2, 16)


def test_corpus_shards_finishes_an_interrupted_prepare(tmp_path, monkeypatch):
    from gpt2lab.engine.prepare import corpus_shards

    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    folder = corpus_shards("tinyshakespeare", 100_000)
    whole = data.read_manifest(folder)
    data.write_manifest(folder, {**whole, "complete": False, "shards": whole["shards"][:2]})
    (folder / whole["shards"][3]["file"]).unlink()
    assert corpus_shards("tinyshakespeare", 100_000) == folder
    assert data.read_manifest(folder) == whole
    data.ShardLoader(folder, "train", 2, 16)


def test_verify_command(shards, capsys):
    assert main(["verify", str(shards), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"{shards}: all 7 shards match the manifest (23,100 tokens, sha256 checked)"
    m = data.read_manifest(shards)
    bad = shards / m["shards"][2]["file"]
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF  # same size: only the sha256 can tell
    bad.write_bytes(raw)
    data.ShardLoader(shards, "train", 2, 16)  # the size check at start passes
    assert main(["verify", str(shards), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"gpt2lab verify: error: shard {bad} is corrupt: its sha256 does not match the manifest; 1 of 7 shards are bad")
    (shards / m["shards"][5]["file"]).write_bytes(b"short")
    assert main(["verify", str(shards), "--no-progress"]) == 2
    assert "(and 1 more bad shard(s)); 2 of 7 shards are bad" in capsys.readouterr().err
    data.write_manifest(shards, {**m, "complete": False})
    assert main(["verify", str(shards), "--no-progress"]) == 2
    assert "unfinished prepare" in capsys.readouterr().err
