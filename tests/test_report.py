"""Tables and plots of ladder results: like compared with like."""

import re
import pytest

from gpt2lab.engine.knobs import RUNGS
from gpt2lab.measure.ladder import run_ladder
from gpt2lab.measure.records import RungResult
from gpt2lab.measure.reference import LADDER_REFERENCES, PROJECT_H200_LADDER, VIDEO_A100_LADDER
from gpt2lab.base.table import Table
from gpt2lab.measure.report import Series, ladder_table, plot_ladder


@pytest.fixture(scope="module")
def ladder():
    return run_ladder(["fp32", "tf32", "bf16"], "test", batch=2, seq=16, steps=2, warmup=1, device="cpu",
                      progress=False)


@pytest.mark.slow
def test_table_prints_as_text_and_renders_as_html(ladder):
    table = ladder_table(ladder)
    text, page = str(table), table._repr_html_()
    assert all(s in text for s in ("fp32", "tf32", "bf16", "ms/step", "tokens/s", ladder[0].hardware["device_name"]))
    assert page.startswith('<table class="gpt2lab-table">') and page.count("<tr>") == 1 + len(ladder)
    assert "<th>MFU own / best peak</th>" in page and len(table.header) <= 8  # a page's width; the file keeps the rest
    assert Table(["a"], [["<b>"]])._repr_html_().count("&lt;b&gt;") == 1  # cells are escaped


@pytest.mark.slow
def test_table_flags_skipped_failed_and_noisy_rungs(ladder):
    skipped = RungResult(**{**ladder[0].to_dict(), "rung": "compile", "skipped": "no compiler"})
    failed = RungResult(**{**ladder[1].to_dict(), "guard_ok": False, "guard": "FAIL: off"})
    noisy = RungResult(**{**ladder[2].to_dict(), "ms_min": 1.0, "ms_max": 10 * ladder[2].ms_median})
    text = str(ladder_table([ladder[0], failed, noisy, skipped]))
    assert re.search(r"\ncompile +skipped +no compiler\n", text)
    assert "CORRECTNESS GUARD FAILED for: tf32" in text
    assert "bf16 (noisy)" in text and "repeat with more --steps" in text


@pytest.mark.slow
def test_plot_puts_speedups_side_by_side_and_ms_only_for_the_same_workload(ladder, tmp_path):
    skipped = RungResult(**{**ladder[0].to_dict(), "rung": "compile", "skipped": "no compiler", "ms_median": None,
                            "speedup": None, "guard_ok": None})
    fig = plot_ladder([r.to_dict() for r in ladder] + [skipped])  # dicts too, as from a results file
    speedup_axis, ms_axis = fig.axes[:2]
    assert "speed-up" in speedup_axis.get_ylabel() and "ms" in ms_axis.get_ylabel()
    assert [t.get_text() for t in speedup_axis.get_xticklabels()][:4] == ["fp32", "tf32", "bf16", "compile"]
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "A100" in legend and "H200" in legend and ladder[0].hardware["device_name"] in legend
    # the test model's milliseconds are not drawn on the GPT-2 124M axis: only the two references' bars
    ms_bars = [p for p in ms_axis.patches]
    assert len(ms_bars) == len(VIDEO_A100_LADDER.ms_per_step) + len(PROJECT_H200_LADDER.ms_per_step)
    assert "not on this axis" in ms_axis.get_title()
    fig.savefig(tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 0


def test_series_speedups():
    s = Series.from_reference(VIDEO_A100_LADDER)
    assert s.speedup("fused_adamw") == pytest.approx(1000 / 90)
    assert s.speedup("no-such-rung") is None
    assert s.workload == "gpt2 B=16 T=1024" == Series.from_reference(PROJECT_H200_LADDER).workload


def test_references_are_subsets_of_the_ladder():
    for ref in LADDER_REFERENCES:
        assert set(ref.ms_per_step) <= set(RUNGS), ref.label
        assert (ref.batch, ref.seq) == (16, 1024)
    ref = VIDEO_A100_LADDER
    assert (ref.ms_per_step["fp32"], ref.ms_per_step["fused_adamw"]) == (1000, 90)
    assert "build-nanogpt" in ref.source and "A100" in ref.gpu
    assert ref.speedup("fused_adamw") == pytest.approx(11.1, abs=0.05)


def test_project_h200_reference_matches_the_committed_results():
    from pathlib import Path

    from gpt2lab.measure.records import load_jsonl

    path = Path(__file__).resolve().parents[1] / "results" / "h200-2026-11-26" / "ladder.jsonl"
    committed = {r.rung: r for r in load_jsonl(path)}
    assert all(r.hardware["device_name"] == "NVIDIA H200" and r.guard_ok for r in committed.values())
    # the file predates the one-yardstick column: it is derived on load, against the H200's 989.5 TFLOP/s bf16
    assert committed["fused_adamw"].mfu_best == pytest.approx(471_534 * 855_166_464 / 989.5e12, rel=1e-3)
    for rung, ms in PROJECT_H200_LADDER.ms_per_step.items():
        assert ms == pytest.approx(committed[rung].ms_median, abs=0.01), rung
    assert PROJECT_H200_LADDER.speedup("fused_adamw") == pytest.approx(10.62, abs=0.01)


@pytest.mark.slow
def test_rung_verdict_sets_this_machine_beside_the_cited_sources(ladder):
    from gpt2lab.measure.report import rung_verdict, verdict_sentence

    fp32, tf32, bf16 = ladder
    table = rung_verdict(tf32, bf16)
    assert table.header[2:4] == ["tf32 ms", "bf16 ms"]
    here, video, h200 = table.rows
    assert here[0].startswith("measured here") and here[-1] in ("faster", "slower", "within noise")
    assert video[2:5] == ["333", "300", "1.11x"] and video[-1] == "cited"
    assert h200[2:4] == ["157.92", "143.35"]
    sentence = verdict_sentence(tf32, bf16)
    assert "bf16 rung ran" in sentence and "tf32" in sentence and bf16.guard in sentence
    skipped = RungResult(**{**bf16.to_dict(), "skipped": "no bf16 here"})
    assert "could not run bf16: no bf16 here" in verdict_sentence(tf32, skipped)
    assert "bf16 skipped: no bf16 here" in str(rung_verdict(tf32, skipped))


@pytest.mark.slow
def test_time_against_previous_runs_the_rung_and_the_one_before(monkeypatch):
    from gpt2lab.measure.ladder import previous_rung, time_against_previous
    from gpt2lab.lessons.scale import SCALES

    assert previous_rung("tf32") == "fp32" and previous_rung("fused_adamw") == "vocab50304"
    with pytest.raises(ValueError):
        previous_rung("fp32")
    before, after = time_against_previous("tf32", SCALES["smoke"])
    assert (before.rung, after.rung) == ("fp32", "tf32") and after.guard_ok is True
    assert after.batch == SCALES["smoke"].bench_batch and after.preset == SCALES["smoke"].bench_preset


@pytest.mark.slow
def test_sources_table_lists_each_rung_for_each_source(ladder):
    from gpt2lab.measure.report import sources_table

    table = sources_table(ladder)
    assert table.header[0] == "rung" and table.header[1].startswith("here: test B=2 T=16")
    rows = {r[0]: r for r in table.rows}
    assert list(rows)[:3] == ["fp32", "tf32", "bf16"] and "fused_adamw" in rows
    assert rows["fp32"][1:] == ["1.00x", "1.00x", "1.00x"]
    assert rows["fused_adamw"][1] == "" and rows["fused_adamw"][2] == "11.11x" and rows["fused_adamw"][3] == "10.62x"


@pytest.mark.slow
def test_a_rung_with_its_own_batch_is_compared_per_token(ladder):
    from gpt2lab.measure.report import rung_verdict

    big = RungResult(**{**ladder[2].to_dict(), "rung": "batch64", "batch": 4 * ladder[2].batch,
                        "ms_median": 2 * ladder[2].ms_median, "ms_min": 2 * ladder[2].ms_min,
                        "ms_max": 2 * ladder[2].ms_max})
    series = Series.from_results([*ladder, big])
    assert series.ms["batch64"] == pytest.approx(ladder[2].ms_median / 2)  # half the time per token
    assert "per token" in " ".join(rung_verdict(ladder[2], big).notes)
    assert rung_verdict(ladder[2], big).rows[0][4] == "2.00x"
