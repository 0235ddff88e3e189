"""HellaSwag scoring on a committed sample of real validation rows (gpt2lab/assets/hellaswag), offline.

Models are tiny and random but have GPT-2's full vocabulary, since the examples are real GPT-2 tokens.
"""

import argparse
import hashlib
import json
import urllib.error
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2lab.base import download
from gpt2lab.run import hellaswag
from gpt2lab.cli import hellaswag as hellaswag_cli
from gpt2lab.base.download import ChecksumError, DownloadError, sha256_file
from gpt2lab.base.errors import UserError
from gpt2lab.run.hellaswag import Example, HellaSwagDataError, evaluate, load_examples, render, score
from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.base.stats import wilson_interval
from gpt2lab.engine.tokenizer import encode

FIXTURE = hellaswag.sample_path()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hellaswag" / "hellaswag_val.jsonl"
CFG = GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=16)


def random_gpt(seed=0):
    """Weights spread wider than GPT-2's init, so the four endings' losses are far from tied."""
    torch.manual_seed(seed)
    model = GPT(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def examples():
    return load_examples(FIXTURE)


@pytest.fixture(scope="module")
def model():
    return random_gpt()


@pytest.fixture(scope="module")
def reference(model, examples):
    """The plainest scoring, one example per forward padded to its own length: what the rest must equal."""
    return score(model, examples, batch_size=1, bucket=1)


def counts(reference, examples):
    sums, means = reference
    labels = torch.tensor([ex.label for ex in examples])
    n = len(examples)
    right = [int((losses[:n].argmin(1) == labels).sum()) for losses in (sums, means)]
    return hellaswag.HellaSwagResult(n, *right)


# ----------------------------------------------------------------------------------------------------
# Data


def test_fixture_loads(examples):
    assert len(examples) == 40
    first = examples[0]
    assert first.ctx == "A man is sitting on a roof. he"
    assert first.label == 3 and first.endings[3] == "starts pulling up roofing on a roof."
    assert [e.label for e in load_examples(FIXTURE, limit=5)] == [e.label for e in examples[:5]]


def test_data_path_order(tmp_path, monkeypatch, no_network):
    other = tmp_path / "other.jsonl"
    other.write_bytes(FIXTURE.read_bytes()[: FIXTURE.read_bytes().index(b"\n") + 1])
    monkeypatch.setenv("GPT2LAB_HELLASWAG", str(other))
    assert len(load_examples()) == 1  # the environment variable...
    assert len(load_examples(FIXTURE)) == 40  # ...loses to an explicit path
    monkeypatch.setenv("GPT2LAB_HELLASWAG", str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl \(from \$GPT2LAB_HELLASWAG\) does not exist"):
        load_examples()


def test_default_is_a_verified_download_into_the_cache(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("GPT2LAB_HELLASWAG", raising=False)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    # a file:// URL stands in for the official one; the checksum check is the real code path
    monkeypatch.setattr(hellaswag, "OFFICIAL_URL", FIXTURE.as_uri())
    monkeypatch.setattr(hellaswag, "OFFICIAL_SHA256", hashlib.sha256(FIXTURE.read_bytes()).hexdigest())
    assert len(load_examples(limit=3)) == 3
    cached = tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    assert cached.read_bytes() == FIXTURE.read_bytes()


def test_offline_without_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2LAB_HELLASWAG", raising=False)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError, match=r"could not download https://raw\.githubusercontent.*GPT2LAB_HELLASWAG"):
        load_examples()


def test_cached_file_with_wrong_checksum(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("GPT2LAB_HELLASWAG", raising=False)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    cached = tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    cached.parent.mkdir()
    cached.write_bytes(FIXTURE.read_bytes())  # real rows, but not the whole official file
    with pytest.raises(ChecksumError) as e:
        load_examples()
    msg = str(e.value)
    assert str(cached) in msg and hellaswag.OFFICIAL_SHA256 in msg
    assert hashlib.sha256(FIXTURE.read_bytes()).hexdigest() in msg


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch, no_network):
    """No $GPT2LAB_HELLASWAG and an empty cache; the download host's probe is recorded, never made."""
    monkeypatch.delenv("GPT2LAB_HELLASWAG", raising=False)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    probes = []

    def offline(url, timeout):
        probes.append((url, timeout))
        return "cannot reach raw.githubusercontent.com:443 (Network is unreachable)"

    monkeypatch.setattr(download, "unreachable", offline)
    return probes


def test_find_data_falls_back_to_the_sample_offline(fresh_machine):
    source = hellaswag.find_data(probe_timeout=2.5)
    assert source.sample and source.path == FIXTURE
    assert fresh_machine == [(hellaswag.OFFICIAL_URL, 2.5)]  # one quick probe, nothing downloaded
    assert "Network is unreachable" in source.why and "$GPT2LAB_HELLASWAG" in source.why
    assert source.label == " (40-row sample)" and len(load_examples(source.path)) == hellaswag.SAMPLE_SIZE


def test_find_data_without_download_never_probes(fresh_machine):
    source = hellaswag.find_data(download=False)
    assert source.sample and fresh_machine == [] and "not downloaded" in source.why


def test_find_data_prefers_the_variable_then_the_cache(tmp_path, fresh_machine, monkeypatch):
    monkeypatch.setattr(hellaswag, "OFFICIAL_SHA256", hashlib.sha256(FIXTURE.read_bytes()).hexdigest())
    cached = tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    cached.parent.mkdir()
    cached.write_bytes(FIXTURE.read_bytes())
    source = hellaswag.find_data()
    assert (source.path, source.sample, source.label) == (cached, False, "") and fresh_machine == []
    monkeypatch.setenv("GPT2LAB_HELLASWAG", str(FIXTURE))
    assert hellaswag.find_data() == hellaswag.DataSource(FIXTURE, False, "from $GPT2LAB_HELLASWAG")
    monkeypatch.setenv("GPT2LAB_HELLASWAG", str(tmp_path / "typo.jsonl"))
    with pytest.raises(FileNotFoundError, match="typo.jsonl"):  # a variable naming no file is the user's error
        hellaswag.find_data()


def test_find_data_downloads_when_the_host_answers(tmp_path, fresh_machine, monkeypatch):
    monkeypatch.setattr(download, "unreachable", lambda url, timeout: None)
    monkeypatch.setattr(hellaswag, "OFFICIAL_URL", FIXTURE.as_uri())  # file:// stands in for the official URL
    monkeypatch.setattr(hellaswag, "OFFICIAL_SHA256", hashlib.sha256(FIXTURE.read_bytes()).hexdigest())
    source = hellaswag.find_data()
    assert not source.sample and source.path == tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    assert source.path.read_bytes() == FIXTURE.read_bytes()


def test_find_data_with_a_corrupt_cached_file_uses_the_sample_and_says_why(tmp_path, fresh_machine):
    cached = tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    cached.parent.mkdir()
    cached.write_bytes(b"not hellaswag\n")
    source = hellaswag.find_data()
    assert source.sample and "sha256" in source.why and cached.read_bytes() == b"not hellaswag\n"


@pytest.mark.skipif(not SHARED.is_file(), reason="needs ../shared/data/hellaswag (not in a fresh clone)")
def test_shared_copy_is_the_official_file():
    assert sha256_file(SHARED) == hellaswag.OFFICIAL_SHA256
    examples = load_examples(SHARED)
    assert len(examples) == hellaswag.OFFICIAL_SIZE
    assert FIXTURE.read_text().splitlines()[1] == SHARED.read_text().splitlines()[251]


GOOD = {"ctx": "A man is sitting on a roof. he", "endings": ["a", "b", "c", "d"], "label": 1}


@pytest.mark.parametrize(
    "line, why",
    [
        ("{not json", "Expecting property name"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "label"}), "missing field"),
        (json.dumps({**GOOD, "label": 4}), "'label' must be an integer 0-3, got 4"),
        (json.dumps({**GOOD, "label": "1"}), "'label' must be an integer 0-3"),
        (json.dumps({**GOOD, "endings": ["a", "b", "c"]}), "list of 4 strings"),
        (json.dumps({**GOOD, "endings": ["a", "b", "c", 4]}), "list of 4 strings"),
        (json.dumps({**GOOD, "ctx": ""}), "'ctx' must be a non-empty string"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, why):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")  # blank lines are skipped but counted
    with pytest.raises(HellaSwagDataError, match="malformed") as e:
        load_examples(path)
    assert f"{path}, line 3:" in str(e.value) and why in str(e.value)


# ----------------------------------------------------------------------------------------------------
# Rendering


def test_render_rows_and_masks(examples):
    ex = examples[0]
    tokens, mask, label = render(ex)
    ctx = encode(ex.ctx)
    assert label == ex.label and tokens.shape == mask.shape
    for row, ending in enumerate(ex.endings):
        end = encode(" " + ending)
        n = len(ctx) + len(end)
        assert tokens[row, :n].tolist() == ctx + end
        assert not tokens[row, n:].any()  # padding at the end
        assert mask[row].nonzero().flatten().tolist() == list(range(len(ctx), n))


def test_render_truncates_the_context_from_the_left(examples):
    ex = max(examples, key=lambda e: render(e)[0].size(1))
    full, full_mask, _ = render(ex)
    tokens, mask, _ = render(ex, block_size=64)
    assert full.size(1) > 64 and tokens.size(1) == 64
    ends = mask.sum(1)
    assert ends.tolist() == full_mask.sum(1).tolist()  # every ending token is still scored
    kept = 64 - int(ends.max())
    ctx = encode(ex.ctx)[-kept:]  # the newest context tokens, the same for all four rows
    for row in range(4):
        assert tokens[row, :kept].tolist() == ctx


def test_tiny_block_size_keeps_one_context_token():
    ex = Example("Some context.", ("one two three four five six seven eight nine ten",) * 4, 0)
    tokens, mask, _ = render(ex, block_size=4)
    assert tokens.shape == (4, 4) and not mask[:, 0].any() and mask[:, 1:].all()


# ----------------------------------------------------------------------------------------------------
# Scoring


@pytest.mark.slow
def test_batched_equals_one_example_at_a_time(model, examples, reference):
    one_sum, one_mean = reference
    b_sum, b_mean = score(model, examples, batch_size=8, bucket=32)  # 40 = 5 full batches
    assert torch.equal(b_sum.argmin(1), one_sum.argmin(1))
    assert torch.equal(b_mean.argmin(1), one_mean.argmin(1))
    torch.testing.assert_close(b_sum, one_sum, rtol=0, atol=1e-4)
    torch.testing.assert_close(b_mean, one_mean, rtol=0, atol=1e-5)
    one = counts(reference, examples)
    assert evaluate(model, examples, batch_size=16) == one  # eager default: no rounding; a short last batch
    assert 0 < one.correct < one.n == 40
    # a random model is nowhere near right, but acc and acc_norm must come from different losses
    assert not torch.equal(one_sum.argmin(1), one_mean.argmin(1))


def test_no_examples(model):
    sums, means = score(model, [])
    assert sums.shape == means.shape == (0, 4)
    assert evaluate(model, [], world_size=1).n == 0


def test_result_dict():
    r = hellaswag.HellaSwagResult(n=8, correct=2, correct_norm=3)
    d = r.to_dict()
    assert {k: d[k] for k in ("n", "correct", "correct_norm", "acc", "acc_norm", "chance")} == {
        "n": 8, "correct": 2, "correct_norm": 3, "acc": 0.25, "acc_norm": 0.375, "chance": 0.25}
    assert d["acc_ci95"] == list(wilson_interval(2, 8)) and d["acc_norm_ci95"] == list(wilson_interval(3, 8))
    assert r.describe() == "0.3750 [0.1368, 0.6943] (3/8), chance 0.25"  # Wilson 3/8, computed by hand


def test_no_interval_without_examples():
    assert "acc_norm_ci95" not in hellaswag.HellaSwagResult(n=0, correct=0, correct_norm=0).to_dict()


@pytest.mark.slow
def test_losses_match_transformers_logits(tmp_path, examples, no_network):
    """An independent path: per-ending losses from Hugging Face's own GPT-2 forward."""
    pytest.importorskip("transformers")
    from gpt2lab.engine.pretrained import load_gpt2, random_hf_gpt2

    ref = random_hf_gpt2(seed=0, noise=0.1, vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2)
    ref.save_pretrained(tmp_path)
    ours = load_gpt2(tmp_path)
    subset = examples[:10]
    sums, means = score(ours, subset, batch_size=4)
    for i, ex in enumerate(subset):
        ctx = encode(ex.ctx)
        for j, ending in enumerate(ex.endings):
            end = encode(" " + ending)
            with torch.no_grad():
                logits = ref(torch.tensor([ctx + end])).logits[0].double()
            logp = logits.log_softmax(-1)
            nll = [-logp[len(ctx) + k - 1, t].item() for k, t in enumerate(end)]
            assert sums[i, j].item() == pytest.approx(sum(nll), abs=1e-4)
            assert means[i, j].item() == pytest.approx(sum(nll) / len(nll), abs=1e-5)


@pytest.mark.slow
def test_compiled_model_compiles_once_per_bucket(model, examples, reference):
    """dynamic=False is the worst case: every new input shape would be a new compilation."""
    shapes = []

    def counting_backend(gm, example_inputs):
        shapes.append(tuple(t.shape for t in example_inputs if isinstance(t, torch.Tensor) and t.dtype == torch.long))
        return gm.forward

    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=counting_backend, dynamic=False)
        sums, means = score(compiled, examples, batch_size=3)  # default bucket for a compiled model: 32
    finally:
        torch._dynamo.reset()
    buckets = CFG.block_size // 32
    lengths = {render(ex, block_size=CFG.block_size)[0].size(1) for ex in examples}
    assert 1 <= len(shapes) <= buckets < len(lengths)
    assert all(s[0][0] == 4 * 3 and s[0][1] % 32 == 0 for s in shapes)  # (4 rows x batch, bucket), last batch too
    assert torch.equal(sums.argmin(1), reference[0].argmin(1))
    assert torch.equal(means.argmin(1), reference[1].argmin(1))
    torch.testing.assert_close(sums, reference[0], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_ranks_split_the_examples(model, examples, reference):
    subset = examples[:13]
    parts = [evaluate(model, subset, batch_size=8, rank=r, world_size=3) for r in range(3)]
    assert [p.n for p in parts] == [5, 4, 4]
    for r, part in enumerate(parts):  # rank r scores examples r, r + 3, r + 6, ...
        shard = (reference[0][:13][r::3], reference[1][:13][r::3])
        assert part == counts(shard, subset[r::3])


DDP_LIMIT = 12


def _ddp_worker(rank, world_size, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = GPT(CFG)
        model.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
        examples = load_examples(FIXTURE, limit=DDP_LIMIT)
        result = evaluate(DDP(model), examples, batch_size=4, rank=rank, world_size=world_size)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result.to_dict()))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
@pytest.mark.slow
def test_ddp_counts_are_all_reduced(tmp_path, model, examples, reference):
    torch.save(model.state_dict(), tmp_path / "model.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2)
    expected = counts(reference, examples[:DDP_LIMIT]).to_dict()
    for rank in range(2):  # every rank holds the totals
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


# ----------------------------------------------------------------------------------------------------
# Command line


def parse(*argv):
    parser = argparse.ArgumentParser()
    hellaswag_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_needs_a_model_source(capsys):
    with pytest.raises(SystemExit) as e:
        parse("--data", str(FIXTURE))
    assert e.value.code == 2 and "one of the arguments --checkpoint --pretrained is required" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_checkpoint_to_json(tmp_path, model, examples, reference, capsys, no_network):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": asdict(CFG), "step": 7}, ckpt)
    out = tmp_path / "out" / "hs.json"
    argv = ["--checkpoint", str(ckpt), "--data", str(FIXTURE), "--limit", "12", "--json", str(out)]
    assert hellaswag_cli.run(parse(*argv)) == 0
    printed = capsys.readouterr().out
    expected = counts(reference, examples[:12])
    lo, hi = wilson_interval(expected.correct_norm, 12)
    assert f"acc_norm {expected.acc_norm:.4f} [{lo:.4f}, {hi:.4f}] ({expected.correct_norm}/12), chance 0.25" in printed
    assert "not the official file" in printed
    data = json.loads(out.read_text())
    assert {k: data[k] for k in expected.to_dict()} == expected.to_dict()
    assert data["chance"] == 0.25 and data["acc_norm_ci95"] == [lo, hi]
    assert data["model"] == f"checkpoint:{ckpt}" and data["data"] == str(FIXTURE)
    assert data["data_sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest() and not data["official_data"]
    assert data["reference"]["gpt2_124m"] == {"acc": 0.2859, "acc_norm": 0.2955}


def test_cli_pretrained_folder(tmp_path, capsys, no_network):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    assert hellaswag_cli.run(parse("--pretrained", str(tmp_path), "--data", str(FIXTURE), "--limit", "3")) == 0
    assert f"3 examples from {FIXTURE} (not the official file), model pretrained:{tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "missing.jsonl"], "--data missing.jsonl: no such file"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_cli_user_errors(tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        hellaswag_cli.run(parse("--pretrained", str(tmp_path), *argv))


def test_cli_bad_model_sources(tmp_path):
    with pytest.raises(UserError, match="cannot load --pretrained"):
        hellaswag_cli.run(parse("--pretrained", str(tmp_path / "nowhere"), "--data", str(FIXTURE)))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt is not a readable gpt2lab checkpoint"):
        hellaswag_cli.run(parse("--checkpoint", str(tmp_path / "junk.pt"), "--data", str(FIXTURE)))
    torch.save({"model": {}, "model_config": asdict(CFG)}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match="--checkpoint .*empty.pt: not a gpt2lab model checkpoint .*Missing key"):
        hellaswag_cli.run(parse("--checkpoint", str(tmp_path / "empty.pt"), "--data", str(FIXTURE)))


def dropout_checkpoint(folder, weights=None):
    """A checkpoint of a model trained with dropout 0.1 (its config says so), as `gpt2lab train` writes one."""
    from gpt2lab.run import checkpoint

    state = random_gpt().state_dict()
    if weights is not None:
        state[weights] = torch.full_like(state[weights], float("nan"))
    checkpoint.save({"step": 3, "model": state, "model_config": {**asdict(CFG), "dropout": 0.1}}, folder)
    return folder


def test_one_loader_gives_an_eval_model_so_scores_and_samples_repeat(tmp_path, capsys):
    from gpt2lab.cli.main import main
    from gpt2lab.run import checkpoint
    from gpt2lab.run.sample import sample

    run = dropout_checkpoint(tmp_path / "run")
    model = checkpoint.load_model(run)
    assert model.config.dropout == 0.1 and not model.training and not any(m.training for m in model.modules())
    examples = load_examples(FIXTURE, limit=8)
    assert evaluate(model, examples).to_dict() == evaluate(model, examples).to_dict()
    assert sample(model, "Hi", tokens=6, seed=0) == sample(checkpoint.load_model(run), "Hi", tokens=6, seed=0)
    results = []
    for i in range(2):  # the command line, twice: the same losses, not two dropout draws
        assert main(["hellaswag", "--checkpoint", str(run), "--data", str(FIXTURE), "--limit", "8",
                     "--device", "cpu", "--json", str(tmp_path / f"{i}.json")]) == 0
        results.append(json.loads((tmp_path / f"{i}.json").read_text()))
    assert results[0] == results[1]


@pytest.mark.parametrize("command", ["hellaswag", "sample"])
def test_non_finite_weights_are_one_line_not_a_traceback(tmp_path, capsys, command):
    from gpt2lab.cli.main import main

    run = dropout_checkpoint(tmp_path / "run", weights="lm_head.weight")
    extra = ["--data", str(FIXTURE), "--limit", "2"] if command == "hellaswag" else ["--tokens", "2"]
    assert main([command, "--checkpoint", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert err == (f"gpt2lab {command}: error: --checkpoint {run}: the model's weights hold NaN or infinite values "
                   "(transformer.wte.weight and 1 more): the run had diverged when it was saved; use an earlier checkpoint\n")


def test_cli_main_turns_data_errors_into_exit_2(tmp_path, capsys):
    from gpt2lab.cli.main import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 9}\n')
    assert main(["hellaswag", "--pretrained", str(tmp_path), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2lab hellaswag: error: ") and f"{bad}, line 1:" in err and "Traceback" not in err
