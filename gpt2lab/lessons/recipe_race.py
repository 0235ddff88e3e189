"""Two recipes trained side by side at the book's scale (chapter 15), and the committed sweep read back.

`race` trains each recipe with the scale's training preset, the same seed, steps and tokens, recording the
validation loss with the training seconds spent before it (evaluation not counted). `Verdict` turns two runs into
numbers and one sentence: each final loss, the time of a step, and whether, when and at what cost in tokens and
seconds the challenger reached the baseline's final loss. `read_sweep` reads what benchmarks/bench_recipes.py
appended to results/recipes-cpu.jsonl (several seeds per recipe), its latest sweep only.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpt2lab.base.table import Table
from gpt2lab.base.timing import load_average
from gpt2lab.measure.results import locate
from gpt2lab.run.config import TrainConfig, get_preset
from gpt2lab.run.train import read_log, train

# Per scale: optimizer steps and validation cadence. cpu: 30 steps took 7 s (gpt2) and 11 s (modern) on 2 idle cores
# of an Intel Xeon, so about a minute for both.
RACE = {"smoke": (8, 2), "cpu": (120, 20), "gpu": (100, 10)}
SWEEP = Path("results/recipes-cpu.jsonl")
SWEEP_COMMAND = "python benchmarks/bench_recipes.py --recipes gpt2,modern --steps 400 --val-every 20 --seeds 3"
# Each idea added alone to gpt2, and taken out of modern: what it buys, seed by seed.
ABLATION = Path("results/recipes-ablation-cpu.jsonl")
ABLATION_COMMAND = "python benchmarks/bench_recipes.py --ablation --steps 200 --val-every 20 --seeds 3"


@dataclass
class RaceRun:
    recipe: str
    tokens_per_step: int
    val: list[tuple[int, float, float]]  # (step, val loss, training seconds of the steps before it)
    step_ms: float  # median time of a training step, the first (warm-up) step left out
    wall_s: float
    load: tuple[float | None, float | None]  # 1-minute load average before and after

    @property
    def final_val(self) -> float:
        return self.val[-1][1]

    def reach(self, target: float) -> tuple[int, float, float] | None:
        """The first validation at or below `target`, or None."""
        return next((v for v in self.val if v[1] <= target), None)


def race_config(scale, recipe: str) -> TrainConfig:
    steps, every = RACE[scale.name]
    preset = get_preset(scale.train_preset, **scale.train_overrides)
    return get_preset(scale.train_preset, **scale.train_overrides, recipe=recipe, max_steps=steps, val_every=every,
                      warmup_steps=min(preset.warmup_steps, max(1, steps // 10)), sample_every=0,
                      checkpoint_every=0, log_every=10**9)


def run_log(recipe: str, out_dir, tokens_per_step: int, wall_s: float = 0.0, load=(None, None)) -> RaceRun:
    """A RaceRun from a run's log.jsonl."""
    spent, seconds, times = {}, 0.0, []
    for r in sorted(read_log(out_dir, "train"), key=lambda r: r["step"]):
        spent[r["step"]] = seconds
        seconds += r["ms"] / 1000
        times.append(r["ms"])
    val = [(v["step"], v["val_loss"], spent.get(v["step"], seconds)) for v in read_log(out_dir, "val")]
    return RaceRun(recipe, tokens_per_step, val, statistics.median(times[1:] or times), wall_s, load)


def race(scale, recipes=("gpt2", "modern")) -> dict[str, RaceRun]:
    """Each recipe trained with the scale's preset for RACE[scale.name] steps, one after the other."""
    out = {}
    for recipe in recipes:
        cfg = race_config(scale, recipe)
        with tempfile.TemporaryDirectory(prefix="gpt2lab-race-") as tmp:
            before, t0 = load_average(), time.perf_counter()
            train(cfg, tmp, progress=False, echo=False)
            wall = time.perf_counter() - t0
            out[recipe] = run_log(recipe, tmp, cfg.total_batch, wall, (before, load_average()))
    return out


@dataclass
class Verdict:
    """What a race measured, challenger against baseline."""

    baseline: RaceRun
    challenger: RaceRun

    @property
    def target(self) -> float:
        return self.baseline.final_val

    @property
    def step_ratio(self) -> float:
        """The challenger's time per step over the baseline's: above 1, each of its steps is slower here."""
        return self.challenger.step_ms / self.baseline.step_ms

    @property
    def reached(self) -> tuple[int, float, float] | None:
        return self.challenger.reach(self.target)

    @property
    def baseline_reached(self) -> tuple[int, float, float]:
        """The baseline's first validation at or below its own final loss (its last, unless it dipped earlier)."""
        return self.baseline.reach(self.target)

    @property
    def token_ratio(self) -> float | None:
        """Tokens the challenger needed to reach the target over the baseline's (None: not reached)."""
        return self.reached[0] / self.baseline_reached[0] if self.reached else None

    @property
    def time_ratio(self) -> float | None:
        """Training seconds to the target, challenger over baseline: the token ratio times the step ratio."""
        return self.reached[2] / self.baseline_reached[2] if self.reached else None

    def sentence(self, device: str) -> str:
        b, c = self.baseline, self.challenger
        steps = b.val[-1][0]
        text = (f"After {steps} steps of {b.tokens_per_step:,} tokens, {b.recipe} reached val loss {b.final_val:.3f} "
                f"and {c.recipe} {c.final_val:.3f}. ")
        if self.reached:
            text += (f"{c.recipe} first measured at or below {b.recipe}'s final loss at step {self.reached[0]}, "
                     f"with {self.token_ratio:.0%} of the tokens {b.recipe} took to get there. ")
        else:
            text += f"{c.recipe} did not reach {b.recipe}'s final loss within these steps. "
        text += (f"Each {c.recipe} step took {self.step_ratio:.2f}x the time of a {b.recipe} step on this {device} "
                 f"(median {c.step_ms:.0f} ms against {b.step_ms:.0f} ms)")
        if self.reached:
            text += (f", so to {b.recipe}'s final loss it spent {self.reached[2]:.1f} s of training against "
                     f"{self.baseline_reached[2]:.1f} s: {self.time_ratio:.2f}x the time")
        return text + "."


def plot_race(runs: dict[str, RaceRun], title: str = ""):
    from gpt2lab.base import figures

    fig, ax = figures.subplots(height=3.4)
    for run in runs.values():
        ax.plot([v[0] for v in run.val], [v[1] for v in run.val], "o-", markersize=3, label=run.recipe)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss")
    ax.set_title(title or "val loss against steps, the same tokens for each recipe")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------- the committed sweep

@dataclass
class Sweep:
    path: Path
    started: str
    preset: str
    summaries: list[dict]  # one per recipe, as bench_recipes.summarize writes them
    runs: list[dict]

    @property
    def target(self) -> float:
        return self.summaries[0]["target"]

    @property
    def hardware(self) -> str:
        hw = next((r["hardware"] for r in self.runs if r.get("hardware")), None)
        if hw:
            return f"{hw.get('device_name') or hw.get('cpu')}, {hw.get('cpu_count')} cores, torch {hw.get('torch')}"
        return f"machine {self.runs[0].get('machine', '?')} (no hardware record in the file)" if self.runs else "?"

    @property
    def load(self) -> float | None:
        """The highest 1-minute load average recorded during the sweep (None where the file has none)."""
        loads = [x for r in self.runs for x in (r.get("load_avg") or []) if x is not None]
        return max(loads, default=None)


def sweep_path(start=".", committed: Path = SWEEP) -> Path:
    """results/recipes-cpu.jsonl (or `committed`'s name) of the repository holding `start` (the book's folder or
    the root), else the relative path."""
    try:
        return locate(start) / committed.name
    except FileNotFoundError:
        return committed


def read_sweep(path=None) -> Sweep | None:
    """The latest sweep in a bench_recipes JSONL file (the lines sharing its last `started`), or None if there is
    no file or no finished sweep in it. Without a path: the repository's results/recipes-cpu.jsonl."""
    path = sweep_path() if path is None else Path(path)
    if not path.exists():
        return None
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return None
    finished = [r["started"] for r in lines if r["kind"] == "summary"]  # an interrupted sweep has runs only
    if not finished:
        return None
    started = max(finished)
    mine = [r for r in lines if r["started"] == started]
    summaries = [r for r in mine if r["kind"] == "summary"]
    return Sweep(path, started, mine[0].get("preset", "?"), summaries, [r for r in mine if r["kind"] == "run"])


def _spread(s: dict, fmt: str = ",.0f", unit: str = "") -> str:
    return f"{s['median']:{fmt}}{unit} [{s['min']:{fmt}}-{s['max']:{fmt}}]" if s else "not reached"


def _delta(s: dict) -> str:
    d = s.get("delta_val")
    return f"{d['median']:+.3f} [{d['min']:+.3f}, {d['max']:+.3f}] vs {s['vs']}" if d else "reference"


def sweep_table(sweep: Sweep) -> Table:
    """One row per recipe. A sweep whose summaries compare each recipe with a reference seed by seed (the
    ablation) shows that difference in place of the final loss itself."""
    paired = any(s.get("delta_val") for s in sweep.summaries)
    last = (_delta, "final val minus reference's, by seed") if paired else (
        lambda s: _spread(s["final_val"], ".3f"), "final val")
    timed = any(s.get("step_ms") for s in sweep.summaries)  # sweeps from before step times were recorded: none
    rows = [[s["recipe"], f"{s['reached']}/{s['seeds']}", _spread(s["tokens"]), _spread(s["train_s"], ".1f", " s"),
             *([_step_time(s)] if timed else []), last[0](s)] for s in sweep.summaries]
    load = f"load average up to {sweep.load:.1f}" if sweep.load is not None else "load not recorded"
    notes = ["median [min-max] over the seeds that reached the target"]
    if paired:
        notes.append("last column: median [min, max] over seeds of (this recipe's final val loss - the reference's "
                     "with the same seed); negative is better")
    if timed:
        notes.append("ms per step: median over seeds of each run's median training step (its first left out); "
                     "x gpt2: the median over seeds of its step time over gpt2's with the same seed")
    return Table(["recipe", "seeds reaching the target", "tokens to target", "training s to target",
                  *(["ms per step (x gpt2)"] if timed else []), last[1]],
                 rows, caption=f"{sweep.path.name}, sweep of {sweep.started[:16].replace('T', ' ')}: preset "
                 f"{sweep.preset}, target {sweep.target:.4f} (gpt2's median final val loss); {sweep.hardware}; {load}",
                 notes=tuple(notes))


def _step_time(summary: dict) -> str:
    ms, ratio = summary.get("step_ms"), summary.get("step_ratio")
    if not ms:
        return "-"
    return f"{ms['median']:.0f} [{ms['min']:.0f}-{ms['max']:.0f}]" + (f" (x{ratio['median']:.2f})" if ratio else "")


def ablation_verdicts(sweep: Sweep) -> dict[str, list[str]]:
    """The ablation read idea by idea: which ideas lowered the final loss in every seed, which raised it in every
    seed, and which moved it both ways (this sweep cannot tell them from no change). `+idea` rows are read against
    gpt2; `modern -idea` rows say what modern lost without the idea (a higher loss means the idea was helping)."""
    out = {"helps alone": [], "hurts alone": [], "unclear alone": [],
           "modern needs it": [], "modern is better without it": [], "unclear in modern": []}
    for s in sweep.summaries:
        d = s.get("delta_val")
        if not d:
            continue
        if s["recipe"].startswith("+"):
            key = "helps alone" if d["max"] < 0 else "hurts alone" if d["min"] > 0 else "unclear alone"
            out[key].append(s["recipe"][1:])
        elif s["recipe"].startswith("modern -"):
            key = ("modern needs it" if d["min"] > 0 else "modern is better without it" if d["max"] < 0
                   else "unclear in modern")
            out[key].append(s["recipe"][len("modern -"):])
    return out
