"""Chapter 15's race and sweep reader: the numbers and the sentence come from the runs' own logs."""

import json

import pytest

from gpt2lab.lessons import recipe_race as rr


def write_log(folder, ms, vals):
    folder.mkdir(parents=True, exist_ok=True)
    log = [{"type": "train", "step": s, "loss": 5.0, "ms": m} for s, m in enumerate(ms)]
    log += [{"type": "val", "step": s, "val_loss": v} for s, v in vals]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return folder


def runs(tmp_path, challenger_vals, challenger_ms=200.0):
    base = write_log(tmp_path / "a", [900.0] + [100.0] * 4, [(0, 9.0), (2, 7.0), (4, 6.0)])
    other = write_log(tmp_path / "b", [900.0] + [challenger_ms] * 4, challenger_vals)
    return rr.run_log("gpt2", base, 512), rr.run_log("modern", other, 512)


def test_run_log_reads_losses_training_seconds_and_the_median_step(tmp_path):
    gpt2, _ = runs(tmp_path, [(0, 9.0), (4, 5.0)])
    assert gpt2.val == [(0, 9.0, 0.0), (2, 7.0, 1.0), (4, 6.0, pytest.approx(1.2))]  # seconds of the steps before each
    assert gpt2.step_ms == 100.0 and gpt2.final_val == 6.0  # the 900 ms first step left out
    assert gpt2.reach(7.0) == (2, 7.0, 1.0) and gpt2.reach(1.0) is None


def test_verdict_when_the_challenger_reaches_the_target_slower_per_step(tmp_path):
    v = rr.Verdict(*runs(tmp_path, [(0, 9.0), (2, 5.9), (4, 5.0)], challenger_ms=200.0))
    assert v.target == 6.0 and v.reached == (2, 5.9, pytest.approx(1.1))
    assert v.step_ratio == pytest.approx(2.0) and v.token_ratio == pytest.approx(0.5)
    assert v.time_ratio == pytest.approx(1.1 / 1.2)
    text = v.sentence("cpu")
    assert "gpt2 reached val loss 6.000 and modern 5.000" in text
    assert "at step 2, with 50% of the tokens gpt2 took to get there." in text
    assert "took 2.00x the time of a gpt2 step on this cpu (median 200 ms against 100 ms)" in text
    assert "it spent 1.1 s of training against 1.2 s: 0.92x the time." in text


def test_verdict_says_so_when_the_target_was_not_reached(tmp_path):
    v = rr.Verdict(*runs(tmp_path, [(0, 9.0), (4, 6.5)], challenger_ms=50.0))
    assert v.reached is None and v.token_ratio is None and v.time_ratio is None
    text = v.sentence("cpu")
    assert "modern did not reach gpt2's final loss within these steps" in text
    assert "0.50x the time" in text and "spent" not in text


def test_race_config_keeps_the_preset_and_sets_the_recipe():
    from gpt2lab.lessons.scale import SCALES, pick_scale

    for name in ("smoke", "cpu", "gpu"):  # gpu: the table itself, as pick_scale refuses it without a CUDA device
        scale = pick_scale({"GPT2LAB_SCALE": name}) if name != "gpu" else SCALES["gpu"]
        cfg = rr.race_config(scale, "modern")
        steps, every = rr.RACE[name]
        assert (cfg.recipe, cfg.max_steps, cfg.val_every, cfg.sample_every, cfg.checkpoint_every) == \
            ("modern", steps, every, 0, 0)
        assert cfg.max_lr == rr.get_preset(scale.train_preset).max_lr and 1 <= cfg.warmup_steps <= steps // 2


@pytest.mark.slow
def test_race_at_smoke_scale_trains_both_recipes_on_the_same_tokens():
    from gpt2lab.lessons.scale import pick_scale

    out = rr.race(pick_scale({"GPT2LAB_SCALE": "smoke"}))
    assert list(out) == ["gpt2", "modern"]
    assert [v[0] for v in out["gpt2"].val] == [v[0] for v in out["modern"].val] == [0, 2, 4, 6, 7]
    assert out["gpt2"].tokens_per_step == out["modern"].tokens_per_step == 512
    assert all(r.final_val < r.val[0][1] and r.step_ms > 0 for r in out.values())


def sweep_lines(started, target, hardware=True):
    run = {"kind": "run", "started": started, "preset": "cpu-tiny-shakespeare", "canonical": "gpt2", "machine": "box"}
    if hardware:
        run.update(hardware={"device_name": "Some CPU", "cpu_count": 2, "torch": "2.9"}, load_avg=[0.5, 1.7])
    summary = {"kind": "summary", "started": started, "preset": "cpu-tiny-shakespeare", "recipe": "gpt2",
               "target": target, "seeds": 3, "reached": 2, "tokens": {"median": 1000, "min": 900, "max": 1100},
               "train_s": {"median": 10.0, "min": 9.5, "max": 11.0},
               "final_val": {"median": target, "min": 4.9, "max": 5.1}}
    modern = dict(summary, recipe="modern", reached=0, tokens={}, train_s={})
    return [run, summary, modern]


def test_read_sweep_takes_the_latest_sweep_with_its_hardware_and_load(tmp_path):
    path = tmp_path / "recipes-cpu.jsonl"
    assert rr.read_sweep(path) is None
    lines = sweep_lines("2026-12-01T10:00:00+00:00", 5.2) + sweep_lines("2026-12-02T10:00:00+00:00", 5.0)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    sweep = rr.read_sweep(path)
    assert sweep.started.startswith("2026-12-02") and sweep.target == 5.0 and len(sweep.runs) == 1
    assert sweep.hardware == "Some CPU, 2 cores, torch 2.9" and sweep.load == 1.7
    table = str(rr.sweep_table(sweep))
    assert "target 5.0000" in table and "Some CPU" in table and "load average up to 1.7" in table
    assert "1,000 [900-1,100]" in table and "10.0 s [9.5-11.0 s]" not in table and "10.0 s [9.5-11.0]" in table
    assert "0/3" in table and "not reached" in table


def test_read_sweep_of_a_file_without_hardware_says_so(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sweep_lines("2026-12-01T10:00:00+00:00", 5.0, False)))
    sweep = rr.read_sweep(path)
    assert sweep.hardware == "machine box (no hardware record in the file)" and sweep.load is None
    assert "load not recorded" in str(rr.sweep_table(sweep))


def test_sweep_path_finds_the_repository_results_from_the_book_folder(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert rr.sweep_path(root / "notebooks") == root / "results" / "recipes-cpu.jsonl"
    assert rr.sweep_path(tmp_path) == rr.SWEEP  # outside any repository: the relative path


def test_verdict_measures_the_baseline_from_its_first_reach_of_its_final_loss(tmp_path):
    base = write_log(tmp_path / "a", [100.0] * 5, [(0, 9.0), (2, 5.9), (4, 6.0)])  # dipped below its final loss
    other = write_log(tmp_path / "b", [100.0] * 5, [(0, 9.0), (4, 6.0)])
    v = rr.Verdict(rr.run_log("gpt2", base, 512), rr.run_log("modern", other, 512))
    assert v.baseline_reached[0] == 2 and v.token_ratio == pytest.approx(2.0)


def test_an_ablation_sweep_shows_each_recipe_against_its_reference_by_seed(tmp_path):
    lines = sweep_lines("2026-12-02T10:00:00+00:00", 5.0)
    lines[1].update(vs=None, delta_val={})
    lines[2].update(recipe="+rope", vs="gpt2", delta_val={"median": -0.05, "min": -0.08, "max": 0.01})
    path = tmp_path / "recipes-ablation-cpu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    table = str(rr.sweep_table(rr.read_sweep(path)))
    assert "-0.050 [-0.080, +0.010] vs gpt2" in table and "reference" in table and "negative is better" in table
    assert "final val minus reference's, by seed" in table


def test_a_sweep_with_step_times_shows_them_against_gpt2s(tmp_path):
    lines = sweep_lines("2026-12-02T10:00:00+00:00", 5.0)
    lines[1].update(step_ms={"median": 150.0, "min": 140.0, "max": 161.0}, step_ratio={"median": 1.0, "min": 1.0, "max": 1.0})
    lines[2].update(step_ms={"median": 171.0, "min": 165.0, "max": 180.0}, step_ratio={"median": 1.14, "min": 1.1, "max": 1.2})
    path = tmp_path / "recipes-cpu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    table = str(rr.sweep_table(rr.read_sweep(path)))
    assert "ms per step (x gpt2)" in table and "171 [165-180] (x1.14)" in table and "150 [140-161] (x1.00)" in table
    path.write_text("".join(json.dumps(r) + "\n" for r in sweep_lines("2026-12-02T10:00:00+00:00", 5.0)))
    assert "ms per step" not in str(rr.sweep_table(rr.read_sweep(path)))  # an older sweep: no empty column


def test_the_ablation_is_read_idea_by_idea_from_the_sign_of_every_seed():
    def row(recipe, lo, hi):
        return {"recipe": recipe, "vs": "x", "delta_val": {"median": (lo + hi) / 2, "min": lo, "max": hi}}

    sweep = rr.Sweep(path=None, started="", preset="p", runs=[], summaries=[
        {"recipe": "gpt2", "delta_val": {}}, row("+rope", -0.2, -0.1), row("+muon", 0.1, 0.3),
        row("+relu2", -0.1, 0.1), row("modern -rope", 0.05, 0.2), row("modern -softcap", -0.3, -0.01),
        row("modern -untied", -0.01, 0.02)])
    v = rr.ablation_verdicts(sweep)
    assert v["helps alone"] == ["rope"] and v["hurts alone"] == ["muon"] and v["unclear alone"] == ["relu2"]
    assert v["modern needs it"] == ["rope"] and v["modern is better without it"] == ["softcap"]
    assert v["unclear in modern"] == ["untied"]
