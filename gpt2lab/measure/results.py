"""Everything committed under `results/`, gathered for the book's results page.

A timing means nothing without the machine and the day it was taken on, so every entry carries its
hardware record (from the file itself, or from the README of the folder it sits in) and its date.
Ladder files (`*.jsonl`) become one entry per run; other measurements (`*.json`) one entry per file.
`curate()` then picks what the page shows: one ladder per machine, date and workload (the run with the lowest
load average when a day has several), and no run timed under heavy load (a load average above the CPU's
core count: other processes had the cores), each left-out run listed in one line with the reason.
The page stays thin: it loops over the curated entries and shows each one's tables and plot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gpt2lab.measure.records import RungResult, load_jsonl, runs
from gpt2lab.measure.reference import LADDER_REFERENCES, LadderReference
from gpt2lab.base.table import Table
from gpt2lab.measure.report import ladder_table, plot_ladder

# Hardware-record keys worth a row, in reading order; anything else the record has follows them.
_HARDWARE_ORDER = ("device_name", "device", "gpu_count", "gpu_memory_gb", "compute_capability", "cpu", "cpu_count",
                   "cpu_bf16", "torch_threads", "torch", "cuda", "python", "platform")


@dataclass
class LadderRun:
    """One run of `gpt2lab bench`: the rungs sharing a start time in one results file."""

    path: Path
    results: list[RungResult]
    note: str | None = None  # the folder README's title, where the run sits in a documented folder

    @property
    def machine(self) -> str:
        return self.results[0].hardware.get("device_name") or self.results[0].device

    @property
    def date(self) -> str:
        return self.results[0].started[:10]

    @property
    def title(self) -> str:
        return f"{self.machine}, {self.date}"

    @property
    def hardware(self) -> dict:
        return self.results[0].hardware

    @property
    def load(self) -> float | None:
        """The highest load average recorded during the run (None where the file has none)."""
        return max((r.load_avg for r in self.results if r.load_avg is not None), default=None)

    @property
    def heavy_load(self) -> bool:
        """Timed on a CPU while other processes wanted more cores than it has: the times are not the machine's."""
        cores = self.hardware.get("cpu_count")
        return self.hardware.get("device") == "cpu" and bool(cores) and self.load is not None and self.load > cores

    @property
    def key(self) -> tuple:
        """Runs with the same key are the same measurement repeated: machine, date, workload and rungs."""
        return (self.machine, self.date, self.results[0].preset, self.results[0].batch, self.results[0].seq,
                tuple(r.rung for r in self.results))

    def table(self) -> Table:
        return ladder_table(self.results)

    def references(self) -> tuple[LadderReference, ...]:
        """The cited ladders to plot beside this run, minus the one that *is* this run (the project's H200 file)."""
        return tuple(ref for ref in LADDER_REFERENCES if not _same_run(ref, self.results))

    def plot(self):
        """The ladder plot, its legend naming the results file rather than "measured here" (the page is
        built anywhere; the run was measured on the machine in its hardware record)."""
        fig = plot_ladder(self.results, self.references())
        for legend in fig.legends:
            for text in legend.get_texts():
                text.set_text(text.get_text().replace("measured here:", f"measured ({self.path.name}):"))
        return fig


def curate(ladders: list[LadderRun]) -> tuple[list[LadderRun], list[str]]:
    """The runs the page shows, in their order, and one line per run left out saying why.

    Left out: runs under heavy load (`heavy_load`), and repeats of a kept run's measurement on the same day
    (the run with the lowest load average is kept; the file keeps them all)."""
    kept: dict[tuple, LadderRun] = {}
    left_out = []
    for run in ladders:
        started = run.results[0].started[:16].replace("T", " ")
        if run.heavy_load:
            left_out.append(f"{run.path.name}, run of {started}: timed at load average {run.load:.1f} on "
                            f"{run.hardware['cpu_count']} cores (other processes had the CPU)")
            continue
        other = kept.get(run.key)
        if other is None:
            kept[run.key] = run
            continue
        keep, drop = (run, other) if (run.load or 0) < (other.load or 0) else (other, run)
        kept[run.key] = keep
        left_out.append(f"{drop.path.name}, run of {drop.results[0].started[:16].replace('T', ' ')}: a repeat of "
                        f"the same measurement that day; the one shown had the lowest load average")
    shown = {id(run) for run in kept.values()}
    return [run for run in ladders if id(run) in shown], left_out


@dataclass
class ResultsFile:
    """A results file that is not a ladder (HellaSwag scoring, data preparation, ...)."""

    path: Path
    data: dict
    note: str | None = None
    hardware: dict | None = field(default=None)

    @property
    def title(self) -> str:
        return self.data.get("benchmark") or self.path.stem.replace("-", " ").replace("_", " ")

    @property
    def about(self) -> str | None:
        """The file's own sentence on what was measured and how to read it (its "about" field), if any."""
        return self.data.get("about") if isinstance(self.data.get("about"), str) else None

    @property
    def date(self) -> str | None:
        for key in ("date", "started"):
            if isinstance(self.data.get(key), str):
                return self.data[key][:10]
        return _folder_date(self.path.parent)

    def table(self) -> Table:
        """Every scalar the file records (nested keys joined by dots; lists of numbers shown as their count)."""
        rows = [[key, _cell(value)] for key, value in _flatten(self.data)
                if not key.startswith("hardware.") and key != "about"]
        return Table(["quantity", "value"], rows, caption=f"{self.path.name}")


def _same_run(ref: LadderReference, results: list[RungResult]) -> bool:
    measured = {r.rung: r.ms_median for r in results if r.ms_median is not None}
    if not measured or set(measured) != set(ref.ms_per_step):
        return False
    return all(abs(round(ms, 2) - ref.ms_per_step[rung]) < 0.01 for rung, ms in measured.items())


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) for v in value):
            return ", ".join(_cell(v) for v in value)
        return ", ".join(str(v) for v in value) or "none"
    return "n/a" if value is None else str(value)


def _folder_date(folder: Path) -> str | None:
    found = re.search(r"\d{4}-\d{2}-\d{2}", folder.name)
    return found.group(0) if found else None


def folder_note(folder: Path) -> str | None:
    """The first heading of a results folder's README: what was measured, where and when, in one line."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return None


def hardware_table(hardware: dict) -> Table:
    """The hardware record as rows of (field, value), the informative fields first."""
    keys = [k for k in _HARDWARE_ORDER if k in hardware] + [k for k in hardware if k not in _HARDWARE_ORDER]
    return Table(["hardware", "value"], [[k, _cell(hardware[k])] for k in keys])


def is_ladder_file(path: str | Path) -> bool:
    """Whether a JSONL results file holds ladder rungs (its records name a `rung`)."""
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    return bool(first) and "rung" in json.loads(first)


def sweep_files(root: str | Path) -> list[Path]:
    """The JSONL files under `root` that are not ladders: recipe sweeps (benchmarks/bench_recipes.py)."""
    return [p for p in sorted(Path(root).rglob("*.jsonl")) if not is_ladder_file(p)]


def collect(root: str | Path) -> tuple[list[LadderRun], list[ResultsFile]]:
    """Every ladder run and every other measurement under `root`, sorted by path (runs in file order)."""
    root = Path(root)
    ladders, others = [], []
    for path in sorted(root.rglob("*.jsonl")):
        if not is_ladder_file(path):  # e.g. a recipes sweep (benchmarks/bench_recipes.py): not rungs
            continue
        note = folder_note(path.parent)
        ladders += [LadderRun(path, run, note) for run in runs(load_jsonl(path))]
    for path in sorted(root.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            hw = data.get("hardware") if isinstance(data.get("hardware"), dict) else None
            others.append(ResultsFile(path, data, folder_note(path.parent), hw))
    return ladders, others


def locate(start: str | Path = ".") -> Path:
    """The repository's `results/` folder, from the book's folder or the repository root."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "results").is_dir() and (folder / "pyproject.toml").is_file():
            return folder / "results"
    raise FileNotFoundError(f"no results/ folder next to a pyproject.toml in {start} or above")

