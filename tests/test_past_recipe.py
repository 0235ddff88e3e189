"""Chapter 15's experiments: each idea's effect, measured in seconds, says what the chapter says it does."""

import math

import pytest
import torch

from gpt2lab.engine.recipes import IDEAS
from gpt2lab.lessons import past_recipe as pr


def test_records_come_from_the_registry_sources_with_their_times():
    records = {r.number: r for r in pr.speedrun_records()}
    assert sorted(records) == [2, 3, 5, 8, 9]
    assert (records[2].before, records[2].after, records[2].ideas) == (45.0, 31.4, ("rope",))
    assert (records[3].before, records[3].after, records[3].ideas) == (31.4, 24.9, ("muon",))
    assert records[5].ideas == ("qknorm", "relu2", "zeroinit") and records[5].after == 15.2
    assert records[8].ideas == ("untied", "embnorm") and records[8].speedup == pytest.approx(12.0 / 10.8)
    assert records[2].what == "rotary embeddings + tuned lr" and records[2].before == pr.BASELINE_MINUTES
    in_a_record = {i for r in records.values() for i in r.ideas}
    assert set(IDEAS) - in_a_record == {"rmsnorm"}  # its source names no record time


def test_records_refuse_two_times_for_one_record(monkeypatch):
    from dataclasses import replace

    bad = dict(IDEAS, relu2=replace(IDEAS["relu2"], source="speedrun record 5, 22.3 -> 14.0 min"))
    monkeypatch.setattr(pr, "IDEAS", bad)
    with pytest.raises(ValueError, match="record 5 has two different times"):
        pr.speedrun_records()


def test_rope_scores_depend_on_the_distance_only_and_learned_positions_do_not():
    scores = pr.position_scores(head_dim=16, length=20)
    rope, learned = scores["rotary (RoPE)"], scores["learned table (GPT-2)"]
    assert pr.diagonal_spread(rope) < 1e-4 * rope.abs().max()
    assert rope[7, 3] == pytest.approx(rope[17, 13].item(), abs=1e-5)  # (i, j) and (i + 10, j + 10)
    assert pr.diagonal_spread(learned) > 1.0
    assert abs(rope[7, 3] - rope[7, 5]) > 1e-3  # the distance itself matters
    assert pr.diagonal_spread(torch.tensor([[1.0, 2.0], [3.0, 1.5]])) == pytest.approx(0.5)


def test_muon_update_has_nearly_equal_singular_values_sgds_copy_the_gradients():
    s = pr.one_step_updates(rows=64, cols=32, spread=100.0)
    ratio = {name: (v.max() / v.min()).item() for name, v in s.items()}
    assert ratio["SGD"] == pytest.approx(100.0, rel=1e-3)
    assert ratio["Muon"] < 2 < ratio["AdamW"] < ratio["SGD"]
    assert all(len(v) == 32 and (v[:-1] >= v[1:]).all() for v in s.values())  # largest first


def test_softcap_holds_every_logit_under_the_cap():
    rows = pr.softcap_logits(scales=(1, 100, 1000), cap=30.0)
    (_, raw1, capped1), (_, raw100, capped100), (_, raw1000, capped1000) = rows
    assert capped1 == pytest.approx(raw1, rel=1e-3)  # small logits pass nearly unchanged
    assert raw1000 == pytest.approx(1000 * raw1, rel=1e-4) and raw1000 > 30
    assert capped100 < 30 and capped1000 <= 30


def test_layernorm_removes_mean_and_scale_rmsnorm_only_the_scale():
    stats = pr.norm_stats(n_embd=64, offset=3.0, scale=5.0)
    assert stats["input"]["mean"] == pytest.approx(3.0, abs=0.2)
    assert stats["LayerNorm"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert stats["LayerNorm"]["std"] == pytest.approx(1.0, abs=1e-3)
    assert stats["RMSNorm"]["rms"] == pytest.approx(1.0, abs=1e-3)
    assert stats["RMSNorm"]["mean"] == pytest.approx(3.0 / math.sqrt(34), abs=0.05)  # the mean survives
    assert (stats["LayerNorm"]["params"], stats["RMSNorm"]["params"]) == (128, 64)


def test_a_zeroed_head_starts_at_ln_vocab():
    losses = pr.starting_losses(recipes=("gpt2", "modern"), vocab_size=1000)
    assert losses["modern"] == pytest.approx(math.log(1000), abs=1e-5)
    assert abs(losses["gpt2"] - math.log(1000)) > 1e-4  # near it (small init) but not exactly
