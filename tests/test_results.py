"""The results page's data: every file under results/ found, grouped by run, with hardware and date."""

import json
import re
from pathlib import Path

import pytest

from gpt2lab.measure.records import RungResult, append_jsonl, load_jsonl
from gpt2lab.measure.reference import PROJECT_H200_LADDER, VIDEO_A100_LADDER
from gpt2lab.measure import results

ROOT = Path(__file__).resolve().parents[1]


def _rung(name, ms, started, device_name="Test CPU", speedup=None):
    hardware = {"device": "cpu", "device_name": device_name, "torch_threads": 2, "torch": "2.x", "cpu_count": 2}
    return RungResult(rung=name, knobs={}, config={"n_layer": 1, "n_embd": 8}, preset="tiny", batch=2, seq=8,
                      steps=3, warmup=1, device="cpu", hardware=hardware, started=started, step_ms=[ms] * 3,
                      ms_median=ms, ms_min=ms, ms_max=ms, tokens_per_s=16000 / ms, speedup=speedup, loss=9.0,
                      guard_ok=True, guard="ok")


def test_collect_groups_runs_and_reads_folder_notes(tmp_path):
    append_jsonl(tmp_path / "ladder.jsonl", [_rung("fp32", 10.0, "2026-01-02T03:04:05+00:00"),
                                             _rung("tf32", 5.0, "2026-01-02T03:04:05+00:00")])
    append_jsonl(tmp_path / "ladder.jsonl", [_rung("fp32", 12.0, "2026-02-01T00:00:00+00:00", "Other CPU")])
    gpu = tmp_path / "gpu-2026-03-04"
    gpu.mkdir()
    (gpu / "README.md").write_text("intro line\n# Measurements on a Big GPU (2026-03-04)\n\nmore\n")
    (gpu / "score.json").write_text(json.dumps({"n": 10042, "acc": 0.25, "reference": {"gpt2": {"acc": 0.2859}},
                                                "times": [1.5, 2.25]}))
    (tmp_path / "bench.json").write_text(json.dumps({"benchmark": "a bench", "ratio": 3.3437,
                                                     "hardware": {"device": "cpu", "device_name": "Test CPU"}}))
    (tmp_path / "list.json").write_text("[1, 2]")  # not a record: ignored

    ladders, others = results.collect(tmp_path)
    assert [(r.title, [x.rung for x in r.results]) for r in ladders] == [
        ("Test CPU, 2026-01-02", ["fp32", "tf32"]), ("Other CPU, 2026-02-01", ["fp32"])]
    assert ladders[0].note is None
    bench, score = others
    assert (bench.title, bench.date, bench.hardware["device_name"]) == ("a bench", None, "Test CPU")
    assert (score.title, score.date, score.note) == ("score", "2026-03-04", "Measurements on a Big GPU (2026-03-04)")
    rows = dict(score.table().rows)
    assert rows == {"n": "10,042", "acc": "0.25", "reference.gpt2.acc": "0.2859", "times": "1.5, 2.25"}
    assert "hardware.device" not in dict(bench.table().rows)


def test_hardware_table_puts_the_machine_first():
    table = results.hardware_table({"platform": "Linux", "torch": "2.x", "device_name": "H200", "extra": [1, 2]})
    assert [row[0] for row in table.rows] == ["device_name", "torch", "platform", "extra"]
    assert table.rows[-1][1] == "1, 2"


def test_committed_results_are_all_on_the_page():
    """Every committed results file shows up; the H200 run is not plotted against its own citation."""
    root = results.locate(ROOT / "book")
    assert root == ROOT / "results"
    ladders, others = results.collect(root)
    files = {p.relative_to(root) for p in root.rglob("*.json*")}
    sweeps = {p.relative_to(root) for p in results.sweep_files(root)}
    assert {r.path.relative_to(root) for r in ladders} | {m.path.relative_to(root) for m in others} | sweeps == files
    assert sweeps == {Path("recipes-cpu.jsonl"), Path("recipes-ablation-cpu.jsonl")}
    by_machine = {r.machine: r for r in ladders}
    h200 = by_machine["NVIDIA H200"]
    assert h200.date == "2026-11-26" and "H200" in (h200.note or "")
    assert h200.references() == (VIDEO_A100_LADDER,)
    assert len(load_jsonl(h200.path)) == len(h200.results)
    cpu = next(r for r in ladders if r.hardware["device"] == "cpu")
    assert PROJECT_H200_LADDER in cpu.references()
    text = str(cpu.table())
    assert "fp32" in text and cpu.hardware["device_name"] in text


def test_plot_has_one_bar_group_per_source(tmp_path):
    run = results.LadderRun(tmp_path / "x.jsonl", [_rung("fp32", 10.0, "2026-01-02T00:00:00+00:00", speedup=1.0),
                                                   _rung("tf32", 5.0, "2026-01-02T00:00:00+00:00", speedup=2.0)])
    fig = run.plot()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0].startswith("measured (x.jsonl): Test CPU") and len(labels) == 1 + len(run.references())


def test_locate_refuses_a_tree_without_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results/ folder"):
        results.locate(tmp_path)


def test_curate_keeps_one_run_per_machine_day_and_workload_and_drops_heavy_load(tmp_path):
    day = "2026-01-02T0{}:00:00+00:00"
    path = tmp_path / "ladder.jsonl"
    for hour, load in ((1, 1.5), (2, 0.9), (3, 17.2)):  # three runs of the same two rungs on one day
        append_jsonl(path, [RungResult(**{**_rung(n, 10.0, day.format(hour)).to_dict(), "load_avg": load})
                            for n in ("fp32", "tf32")])
    append_jsonl(path, [_rung("fp32", 10.0, "2026-01-03T00:00:00+00:00")])  # the next day: its own entry
    ladders, _ = results.collect(tmp_path)
    shown, left_out = results.curate(ladders)
    assert [(r.date, r.results[0].started[11:13], r.load) for r in shown] == [("2026-01-02", "02", 0.9),
                                                                            ("2026-01-03", "00", None)]
    assert len(left_out) == 2
    assert "run of 2026-01-02 03:00: timed at load average 17.2 on 2 cores" in left_out[1]
    assert "run of 2026-01-02 01:00: a repeat of the same measurement that day" in left_out[0]


def test_committed_results_page_is_curated():
    """One entry per machine and date; nothing timed under heavy load; no path of the measuring machine;
    a HellaSwag score of a model that is not GPT-2 says what the model was."""
    ladders, others = results.collect(ROOT / "results")
    shown, left_out = results.curate(ladders)
    assert len({(r.machine, r.date, r.key) for r in shown}) == len(shown) and left_out
    assert not any(r.heavy_load for r in shown)
    for path in (ROOT / "results").rglob("*.json*"):
        for value in re.findall(r'"((?:/|\.\./|~/)[^"]*)"', path.read_text(encoding="utf-8")):
            raise AssertionError(f"{path.name} records a path of the machine that measured it: {value}")
    for m in others:
        if str(m.data.get("model", "")).startswith("checkpoint:"):
            assert m.about and "not GPT-2" in m.about and "chance" in m.about, m.path
