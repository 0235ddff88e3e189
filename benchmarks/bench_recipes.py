"""Past GPT-2's recipe, measured: each recipe trained on the same tokens, several seeds, against `gpt2`.

Every recipe trains one preset's run (its model shape, batch, learning rate and schedule; by default
cpu-tiny-shakespeare) for the same number of steps, so the same tokens, with each seed. The validation loss is
recorded along the way with the training time spent to reach it (evaluation not counted). The target is `gpt2`'s
final validation loss (the median over its seeds); for each recipe the report gives the tokens and the training
seconds to reach it (median and range over the seeds, and in how many seeds it was reached at all) and its final
validation loss minus its reference's (gpt2's; modern's for `modern -idea`), seed by seed, and its median time per
step against gpt2's (each run's median step, the first left out, over gpt2's with the same seed). One JSON line per run
(with its hardware record and the load average before and after it) is appended to --json as the run ends, and one
per recipe's summary when all have run. The learning rate is the preset's for every recipe: no idea is tuned, so a
loss here is a lower bound on what that idea buys.

    .venv/bin/python benchmarks/bench_recipes.py --recipes gpt2,modern --steps 400 --val-every 20 --seeds 3
    .venv/bin/python benchmarks/bench_recipes.py --steps 10 --val-every 5 --seeds 2 --recipes gpt2,modern \
        --json /tmp/check.jsonl  # a check that it works (about 2 minutes on 2 cores), not a measurement
    .venv/bin/python benchmarks/bench_recipes.py --ablation --steps 200 --val-every 20 --seeds 3

On a GPU, the same table for GPT-2 124M at the video's batch shape (FineWeb-Edu shards prepared first with
`python -m gpt2lab prepare`; results/recipes-gpu.jsonl):

    python benchmarks/bench_recipes.py --preset gpt2-124m-fineweb10b --recipes gpt2,modern --seeds 3 \
        --steps 2000 --val-every 250

--ablation trains gpt2, each idea added alone to it (`+rope`), modern, and modern with each idea taken out
(`modern -rope`), and appends to results/recipes-ablation-cpu.jsonl: what each idea buys on its own, and what the
others lose without it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpt2lab.base.errors import UserError
from gpt2lab.base.hardware import hardware_record
from gpt2lab.base.timing import load_average
from gpt2lab.engine.recipes import IDEAS, canonical
from gpt2lab.run.config import get_preset
from gpt2lab.run.train import read_log, train

PRESET = "cpu-tiny-shakespeare"
DEFAULT_RECIPES = ",".join(["gpt2", *IDEAS, "modern"])


def ablation_recipes() -> list[tuple[str, str]]:
    """(label, recipe) for the ablation: gpt2, each idea alone on top of it, modern, modern without each idea."""
    added = [(f"+{idea}", idea) for idea in IDEAS]
    removed = [(f"modern -{idea}", ",".join(i for i in IDEAS if i != idea)) for idea in IDEAS]
    return [("gpt2", "gpt2"), *added, ("modern", "modern"), *removed]


def curve(out_dir: Path, tokens_per_step: int) -> list[list[float]]:
    """[step, tokens, val loss, training seconds before that evaluation] for each validation of a run."""
    spent, seconds = {}, 0.0
    for r in sorted(read_log(out_dir, "train"), key=lambda r: r["step"]):
        spent[r["step"]] = seconds  # the training time of the steps before this one
        seconds += r["ms"] / 1000
    return [[v["step"], v["step"] * tokens_per_step, v["val_loss"], spent.get(v["step"], seconds)]
            for v in read_log(out_dir, "val")]


def step_ms(out_dir: Path) -> float:
    """The median training step in ms, the first step (warm-up: allocations, compilation) left out."""
    ms = [r["ms"] for r in sorted(read_log(out_dir, "train"), key=lambda r: r["step"])]
    return statistics.median(ms[1:] or ms)


def reach(points: list[list[float]], target: float) -> list[float] | None:
    """The first validation at or below `target` ([step, tokens, val, seconds]), or None."""
    return next((p for p in points if p[2] <= target), None)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def reference_of(label: str, labels) -> str | None:
    """What a recipe's contribution is measured against: `modern` for `modern -idea`, else gpt2 (None for gpt2
    itself, or where the reference did not run)."""
    ref = "modern" if label.startswith("modern -") else "gpt2"
    return ref if ref != label and ref in labels else None


def paired_deltas(runs: list[dict], label: str, ref: str) -> list[float]:
    """final val(label) - final val(ref), seed by seed: each seed starts both runs from its own initial draw and
    batch order, so the difference cancels most of what a seed alone moves."""
    by_seed = lambda name: {r["seed"]: r["final_val"] for r in runs if _label(r) == name and "seed" in r}  # noqa: E731
    mine, theirs = by_seed(label), by_seed(ref)
    return [mine[s] - theirs[s] for s in sorted(mine) if s in theirs]


def _label(run: dict) -> str:
    return run.get("label") or run["canonical"]


def summarize(runs: list[dict], baseline: str = "gpt2") -> list[dict]:
    """Per recipe: the target (the baseline's median final val loss), the tokens and seconds to reach it, and the
    final val loss against its reference (`reference_of`), paired by seed."""
    finals = [r["final_val"] for r in runs if r["canonical"] == baseline]
    if not finals:
        raise ValueError(f"no {baseline} runs to set the target")
    target = statistics.median(finals)
    out = []
    labels = list(dict.fromkeys(_label(r) for r in runs))
    for recipe in labels:
        mine = [r for r in runs if _label(r) == recipe]
        hits = [p for p in (reach(r["val"], target) for r in mine) if p is not None]
        ref = reference_of(recipe, labels)
        out.append({"kind": "summary", "recipe": recipe, "target": target, "seeds": len(mine), "reached": len(hits),
                    "steps": spread([p[0] for p in hits]), "tokens": spread([p[1] for p in hits]),
                    "train_s": spread([p[3] for p in hits]), "final_val": spread([r["final_val"] for r in mine]),
                    "wall_s": spread([r["wall_s"] for r in mine]), "vs": ref,
                    "step_ms": spread([r["step_ms"] for r in mine if "step_ms" in r]),
                    "step_ratio": _ratio(runs, recipe, baseline),
                    "delta_val": spread(paired_deltas(runs, recipe, ref)) if ref else {}})
    return out


def _ratio(runs: list[dict], label: str, baseline: str) -> dict:
    """Step time over the baseline's, seed by seed (each run's median step): the two runs of a seed are trained
    back to back, so a machine that speeds up or slows down between seeds moves both alike."""
    by_seed = lambda name: {r["seed"]: r["step_ms"] for r in runs  # noqa: E731
                            if _label(r) == name and "step_ms" in r and "seed" in r}
    mine, theirs = by_seed(label), by_seed(baseline)
    return spread([mine[s] / theirs[s] for s in sorted(mine) if s in theirs])


def one_run(recipe: str, seed: int, args) -> dict:
    cfg = get_preset(args.preset, recipe=recipe, seed=seed, max_steps=args.steps, val_every=args.val_every,
                     val_steps=args.val_steps, sample_every=0, checkpoint_every=0, log_every=10**9,
                     warmup_steps=min(get_preset(args.preset).warmup_steps, max(1, args.steps // 10)),
                     **({"autocast": args.autocast} if args.autocast else {}))
    with tempfile.TemporaryDirectory() as tmp:
        load_before, t0 = load_average(), time.perf_counter()
        train(cfg, tmp, progress=False, echo=False)
        wall = time.perf_counter() - t0
        points = curve(Path(tmp), cfg.total_batch)
        per_step = step_ms(Path(tmp))
    return {"kind": "run", "recipe": recipe, "canonical": canonical(recipe), "seed": seed, "steps": args.steps,
            "tokens_per_step": cfg.total_batch, "autocast": cfg.autocast, "val": points,
            "final_val": points[-1][2], "step_ms": per_step, "wall_s": wall,
            "load_avg": [load_before, load_average()],
            "hardware": hardware_record(cfg.device)}


def report(summary: list[dict]) -> str:
    fmt = lambda s, unit="": f"{s['median']:,.0f}{unit} [{s['min']:,.0f}-{s['max']:,.0f}]" if s else "-"  # noqa: E731
    lines = [f"target: gpt2's final val loss {summary[0]['target']:.4f} (median over its seeds)",
             f"{'recipe':<22} {'reached':>7} {'tokens to target':>26} {'train s to target':>20} {'final val':>22}"
             f"  {'ms per step':>20} {'x gpt2, by seed':>17}  {'final val minus reference, by seed':>34}"]
    for s in summary:
        final, d = s["final_val"], s.get("delta_val")
        delta = f"{d['median']:+.4f} [{d['min']:+.3f} to {d['max']:+.3f}] vs {s['vs']}" if d else ""
        r = s.get("step_ratio")
        ratio = f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]" if r else "-"
        lines.append(f"{s['recipe']:<22} {s['reached']:>3}/{s['seeds']:<3} {fmt(s['tokens']):>26} "
                     f"{fmt(s['train_s'], ' s'):>20} {final['median']:>8.4f} [{final['min']:.3f}-{final['max']:.3f}]"
                     f"  {fmt(s.get('step_ms')):>20} {ratio:>17}  {delta:>34}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group()  # --ablation names its own recipes: both at once is refused, exit 2
    which.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma list of recipes, `+` between the ideas of one "
                   f"(e.g. gpt2,modern,rope+relu2); must include gpt2 (default: {DEFAULT_RECIPES})")
    which.add_argument("--ablation", action="store_true",
                   help="in place of --recipes: gpt2, each idea alone on it, modern, modern without each idea "
                   "(default --json results/recipes-ablation-cpu.jsonl)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per recipe (default 3)")
    p.add_argument("--preset", default=PRESET, help=f"the training run every recipe trains (default {PRESET}; on a "
                   "GPU: gpt2-124m-fineweb10b, GPT-2 124M at the video's batch, once its FineWeb-Edu shards are "
                   "prepared, or gpu-tiny-shakespeare)")
    p.add_argument("--steps", type=int, help=f"optimizer steps per run (default: the preset's; {PRESET}: "
                   f"{get_preset(PRESET).max_steps:,} steps of {get_preset(PRESET).total_batch:,} tokens)")
    p.add_argument("--val-every", type=int, default=100, help="validation every N steps (default 100)")
    p.add_argument("--val-steps", type=int, help="micro-batches per validation (default: the preset's)")
    p.add_argument("--autocast", choices=["none", "bf16"], help="override the preset's autocast (bf16)")
    p.add_argument("--json", metavar="PATH", help="append one JSON line per run and per recipe summary "
                   "(default results/recipes-cpu.jsonl, with --ablation results/recipes-ablation-cpu.jsonl)")
    args = p.parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except UserError as e:
        print(f"bench_recipes: error: {e}", file=sys.stderr)
        return 2
    args.steps = preset.max_steps if args.steps is None else args.steps
    args.val_steps = preset.val_steps if args.val_steps is None else args.val_steps
    if args.json is None:
        where = "cpu" if preset.device == "cpu" else "gpu"
        args.json = f"results/recipes-{'ablation-' if args.ablation else ''}{where}.jsonl"
    try:
        if args.ablation:
            labelled = ablation_recipes()
        else:
            specs = [r.replace("+", ",") for r in args.recipes.split(",") if r.strip()]
            labelled = [(canonical(r), r) for r in specs]
        if "gpt2" not in {canonical(r) for _, r in labelled}:
            raise UserError("--recipes must include gpt2: its final val loss is the target")
        if args.seeds < 1 or args.steps < 1 or args.val_every < 1:
            raise UserError("--seeds, --steps and --val-every must be positive")
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        runs = []
        for seed in range(args.seeds):  # seeds outermost: a load change on a shared machine hits every recipe
            for label, recipe in labelled:
                run = one_run(recipe, seed, args)
                runs.append({**run, "label": label, "started": started, "machine": platform.node(), "preset": args.preset})
                append_json(args.json, runs[-1:])  # an interrupted sweep keeps every run it finished
                print(f"{label} seed {seed}: final val {run['final_val']:.4f}, {run['wall_s']:.1f} s", flush=True)
        summary = [{**s, "started": started, "preset": args.preset} for s in summarize(runs)]
    except UserError as e:
        print(f"bench_recipes: error: {e}", file=sys.stderr)
        return 2
    print(report(summary))
    append_json(args.json, summary)
    if args.json:
        print(f"appended {len(runs) + len(summary)} lines to {args.json}")
    return 0


def append_json(path: str, records: list[dict]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    sys.exit(main())
