"""Ladder results as people read them: a table (text for the terminal, HTML for the book) and a plot.

Comparisons follow one rule: like with like. Speed-ups over each run's own fp32 rung can sit side by side
across machines and workloads; absolute milliseconds only where the workload (model, batch, sequence) is
the same, since a 2-core CPU timing a small model and an A100 timing GPT-2 124M share no time axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2lab.base.table import Table
from gpt2lab.measure.records import RungResult
from gpt2lab.measure.reference import LADDER_REFERENCES, LadderReference


def describe_run(r: RungResult) -> str:
    """Hardware and workload in one line, for table captions and plot legends."""
    hw = r.hardware
    threads = f", {hw['torch_threads']} threads" if hw["device"] == "cpu" else ""
    return f"{hw['device_name']} ({hw['device']}{threads}, torch {hw['torch']}), {workload(r)}"


def workload(r: RungResult | LadderReference) -> str:
    """Model, batch and sequence length: what makes two timings comparable in milliseconds."""
    if isinstance(r, LadderReference):
        return f"{r.model.split()[0]} B={r.batch} T={r.seq}"
    model = r.preset or f"{r.config['n_layer']}-layer {r.config['n_embd']}-wide GPT"
    return f"{model} B={r.batch} T={r.seq}"


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def ladder_table(results: list[RungResult]) -> Table:
    """One row per rung, in the few columns a page has room for; skipped rungs say why, guard failures say
    FAIL, noisy rungs are flagged. The results file keeps everything else (MFU against the best peak, the
    memory a step adds, the first step's time, the loss itself, every step's time)."""
    header = ["rung", "ms/step (min-max)", "tokens/s", "vs fp32", "MFU own / best peak", "peak MiB", "warm-up s",
              "loss guard"]
    rows = []
    for r in results:
        if r.skipped is not None:
            rows.append([r.rung, "skipped", r.skipped] + [""] * (len(header) - 3))
            continue
        rows.append([
            r.rung + (" (noisy)" if r.noisy else ""), f"{r.ms_median:.1f} ({r.ms_min:.1f}-{r.ms_max:.1f})",
            f"{r.tokens_per_s:,.0f}", _fmt(r.speedup, ".2f") + ("x" if r.speedup else ""),
            (_fmt(r.mfu and 100 * r.mfu, ".1f") + ("%" if r.mfu else "") + " / "
             + _fmt(r.mfu_best and 100 * r.mfu_best, ".1f") + ("%" if r.mfu_best else "")),
            _fmt(r.peak_mem_mb, ".0f"), f"{r.warmup_s:.1f}" if r.warmup and r.warmup_s is not None else "-",
            r.guard or "",
        ])
    notes = []
    if results:
        r0 = results[0]
        caption = f"{describe_run(r0)}: median of {r0.steps} timed steps after {r0.warmup} warm-up"
        load = max((r.load_avg for r in results if r.load_avg is not None), default=None)
        if load is not None and r0.hardware["device"] == "cpu" and load > (r0.hardware.get("cpu_count") or 1):
            notes.append(f"load average {load:.1f} exceeds the {r0.hardware['cpu_count']} cores: other processes "
                         "shared the CPU, so these times are slower and noisier than the machine can do")
    else:
        caption = "no results"
    kinds = {r.mem_kind for r in results if r.skipped is None and r.mem_kind}
    if kinds:
        notes.append(f"peak MiB: {' / '.join(sorted(kinds))}; MFU: against the datasheet peak of the rung's own "
                     "dtype / of the device's best dense 16-bit peak (n/a on a CPU: no datasheet peak)")
    noisy = [r.rung for r in results if r.noisy]
    if noisy:
        notes.append(f"noisy: {', '.join(noisy)} (slowest step more than 1.5x the fastest's distance from the median): "
                     "repeat with more --steps before trusting a verdict")
    failed = [r.rung for r in results if r.guard_ok is False]
    if failed:
        notes.append(f"CORRECTNESS GUARD FAILED for: {', '.join(failed)} (fast but wrong: do not use these numbers)")
    return Table(header, rows, caption, tuple(notes))


def format_table(results: list[RungResult]) -> str:
    return str(ladder_table(results))


# ------------------------------------------------------------------------------------------------- plots


@dataclass
class Series:
    """One source of ladder timings, measured here or cited: a label, its workload, ms/step per rung."""

    label: str
    workload: str
    ms: dict[str, float | None]  # None: skipped
    failed: frozenset = frozenset()  # rungs that failed the loss guard

    @classmethod
    def from_results(cls, results: list[RungResult], label: str | None = None) -> "Series":
        """A rung with a batch of its own (batch64) counts per token: its ms are scaled to the run's batch."""
        results = [RungResult.from_dict(r) if isinstance(r, dict) else r for r in results]
        b0 = results[0].batch
        ms = {r.rung: r.ms_median * b0 / r.batch if r.ms_median else r.ms_median for r in results}
        return cls(label or f"measured here: {describe_run(results[0])}", workload(results[0]), ms,
                   frozenset(r.rung for r in results if r.guard_ok is False))

    @classmethod
    def from_reference(cls, ref: LadderReference) -> "Series":
        return cls(ref.label, workload(ref), dict(ref.ms_per_step))

    def speedup(self, rung: str, baseline: str = "fp32") -> float | None:
        base, ms = self.ms.get(baseline), self.ms.get(rung)
        return base / ms if base and ms else None


def plot_ladder(results: list[RungResult], references: tuple[LadderReference, ...] = LADDER_REFERENCES):
    """Speed-up over each source's own fp32 rung, side by side (top), and ms/step on a log axis for the
    sources that timed the same workload as the first reference (bottom); the legend under both. Returns a
    matplotlib Figure, in the column-wide style of `gpt2lab.base.figures`."""
    import matplotlib.pyplot as plt

    from gpt2lab.base import figures

    ours = Series.from_results(results)
    refs = [Series.from_reference(r) for r in references]
    series = [ours, *refs]
    names = list(dict.fromkeys([*ours.ms, *(n for s in refs for n in s.ms)]))  # ours first, then theirs
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    width = 0.8 / len(series)

    fig, (ax_up, ax_ms) = figures.subplots(2, 1, height=8.2)
    for i, s in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ups = [s.speedup(n) for n in names]
        kept = [(x, u, n) for x, u, n in zip(xs, ups, names) if u is not None]
        bar_colors = ["tab:red" if n in s.failed else colors[i % len(colors)] for _, _, n in kept]
        bars = ax_up.bar([k[0] for k in kept], [k[1] for k in kept], width, color=bar_colors, label=s.label)
        ax_up.bar_label(bars, labels=[f"{k[1]:.1f}" for k in kept], rotation=90, padding=2)
        for x, n in zip(xs, names):
            if s is ours and n in s.ms and s.ms[n] is None:
                ax_up.text(x, 0.02, "skipped", rotation=90, ha="center", va="bottom",
                           transform=ax_up.get_xaxis_transform())
    ax_up.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax_up.set_ylabel("speed-up over fp32 (x)")
    ax_up.set_title("speed-up, each source against its own fp32 (higher is better)")
    ax_up.margins(y=0.22)  # room for the rotated bar labels

    same = [s for s in series if refs and s.workload == refs[0].workload]
    for i, s in enumerate(same):
        xs = [j + (i - (len(same) - 1) / 2) * (0.8 / len(same)) for j in range(len(names))]
        kept = [(x, s.ms.get(n)) for x, n in zip(xs, names) if s.ms.get(n)]
        ax_ms.bar([k[0] for k in kept], [k[1] for k in kept], 0.8 / len(same),
                  color=colors[series.index(s) % len(colors)], label=s.label)
    ax_ms.set_yscale("log")
    ax_ms.set_ylabel("ms per step (log scale)")
    title = f"time per step, {same[0].workload} only (lower is better)" if same else "time per step"
    if ours not in same:
        title += f"\nthis machine timed {ours.workload}: not on this axis"
    ax_ms.set_title(title)
    for ax in (ax_up, ax_ms):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", rotation_mode="anchor")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = ax_up.get_legend_handles_labels()
    if ours.failed:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:red"))
        labels.append("failed the correctness guard: loss differs from fp32's, timing not valid")
    figures.legend_below(fig, handles, labels)
    fig.suptitle("The optimization ladder: each rung is the previous one plus one change")
    return fig


def rung_verdict(before: RungResult, after: RungResult,
                 references: tuple[LadderReference, ...] = LADDER_REFERENCES) -> Table:
    """One change, three sources: this machine's measured step times and verdict beside the cited ones."""
    from gpt2lab.measure.records import compare

    header = ["source", "workload", f"{before.rung} ms", f"{after.rung} ms", "speed-up", "verdict"]
    rows = []
    if before.skipped is None and after.skipped is None:
        ratio, verdict = compare(before, after)
        rows.append([f"measured here: {before.hardware['device_name']}", workload(after), f"{before.ms_median:.1f}",
                     f"{after.ms_median:.1f}", f"{ratio:.2f}x", verdict])
    else:
        skipped = before if before.skipped is not None else after
        rows.append([f"measured here: {before.hardware['device_name']}", workload(after), "", "", "",
                     f"{skipped.rung} skipped: {skipped.skipped}"])
    for ref in references:
        a, b = ref.ms_per_step.get(before.rung), ref.ms_per_step.get(after.rung)
        if a and b:
            rows.append([ref.label.split(",")[0], workload(ref), f"{a:g}", f"{b:g}", f"{a / b:.2f}x", "cited"])
    notes = ["verdict: 'faster' or 'slower' only when the two rungs' fastest and slowest steps do not overlap; "
             "anything closer is 'within noise'"] + [f"{ref.label}: {ref.source}" for ref in references]
    if before.batch != after.batch:
        notes.insert(0, f"{before.rung} ran B={before.batch}, {after.rung} B={after.batch}: the ms are per step, "
                        "the speed-up and verdict per token")
    return Table(header, rows, f"{before.rung} -> {after.rung}: {after.rung} is the previous rung plus one change",
                 tuple(notes))


def verdict_sentence(before: RungResult, after: RungResult) -> str:
    """The measured answer in one sentence, for the end of a rung chapter."""
    from gpt2lab.measure.records import compare

    if before.skipped is not None or after.skipped is not None:
        skipped = before if before.skipped is not None else after
        return f"This machine could not run {skipped.rung}: {skipped.skipped}."
    ratio, verdict = compare(before, after)
    how = {"faster": f"{ratio:.2f}x faster than", "slower": f"{1 / ratio:.2f}x slower than",
           "within noise": f"within noise of ({ratio:.2f}x)"}[verdict]
    return (f"On {before.hardware['device_name']} ({workload(after)}), the {after.rung} rung ran {how} "
            f"{before.rung}: {after.ms_median:.1f} vs {before.ms_median:.1f} ms per step (medians of {after.steps}); "
            f"loss guard: {after.guard}.")


def sources_table(results: list[RungResult], references: tuple[LadderReference, ...] = LADDER_REFERENCES) -> Table:
    """Speed-up over fp32 per rung, for this machine and each cited source side by side (like with like)."""
    ours = Series.from_results(results)
    refs = [Series.from_reference(r) for r in references]
    header = ["rung", f"here: {ours.workload}"] + [f"{r.label.split(',')[0]}: {r.workload}" for r in refs]
    rows = []
    for name in dict.fromkeys([*ours.ms, *(n for r in refs for n in r.ms)]):
        cells = [name]
        for s in (ours, *refs):
            up = s.speedup(name)
            cells.append("skipped" if s is ours and name in s.ms and s.ms[name] is None
                         else "" if up is None else f"{up:.2f}x")
        rows.append(cells)
    return Table(header, rows, "speed-up over each source's own fp32 rung",
                 tuple(f"{r.label}: {r.source}" for r in references))


def step_by_step_table(results: list[RungResult], references: tuple[LadderReference, ...] = LADDER_REFERENCES) -> Table:
    """Each rung against the one before it: this machine's ratio and verdict beside each cited source's ratio."""
    from gpt2lab.measure.records import compare

    refs = [Series.from_reference(r) for r in references]
    header = ["change", "here", "verdict here"] + [r.label.split(",")[0] for r in refs]
    rows = []
    for before, after in zip(results, results[1:]):
        if before.skipped is None and after.skipped is None:
            ratio, verdict = compare(before, after)
            here = f"{ratio:.2f}x"
        else:
            here, verdict = "", "skipped"
        cited = []
        for s in refs:
            a, b = s.ms.get(before.rung), s.ms.get(after.rung)
            cited.append(f"{a / b:.2f}x" if a and b else "")
        rows.append([f"{before.rung} -> {after.rung}", here, verdict, *cited])
    return Table(header, rows, "each change on its own: speed-up over the previous rung",
                 ("verdict: 'faster' or 'slower' only when the two rungs' step-time ranges do not overlap",))
