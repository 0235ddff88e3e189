"""HellaSwag scoring speed: gpt2lab's batched scorer against one example per forward pass.

Same random tiny GPT, same examples, same process. The baseline is the straightforward loop (as in the
video): one example's four rows per forward pass, cross-entropy over the vocabulary at every position,
masked to the ending afterwards. Against it: `score(batch_size=B)`, which packs many examples into one
forward and computes the output head only where an ending token is predicted. For a fair breakdown the
same scorer is also timed with batch_size=1 (its batching alone). All include tokenization, as a user
running the eval would see it. Prints examples/s and the ratios, and writes them to JSON with the hardware.

    .venv/bin/python benchmarks/bench_hellaswag.py [--data PATH] [--n N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt2lab.base.hardware import hardware_record
from gpt2lab.run.hellaswag import load_examples, render, sample_path, score
from gpt2lab.engine.model import GPT, get_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "hellaswag" / "hellaswag_val.jsonl"
FIXTURE = sample_path()


@torch.no_grad()
def classic_score(model, examples) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per forward, cross-entropy at every position, masked afterwards."""
    sums, means = [], []
    for ex in examples:
        tokens, mask, _ = render(ex)
        logits, _ = model(tokens)
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(4, -1)
        m = mask[:, 1:]
        sums.append((ce * m).sum(1).double())
        means.append(sums[-1] / m.sum(1))
    return torch.stack(sums), torch.stack(means)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED if SHARED.is_file() else FIXTURE))
    p.add_argument("--n", type=int, default=200, help="examples (the first N of the file)")
    p.add_argument("--model", default="cpu-small", help="gpt2lab.engine.model preset, random weights")
    p.add_argument("--batch-size", type=int, default=16, help="examples per forward in the batched scorer")
    p.add_argument("--bucket", type=int, help="length granularity (default: the scorer's, 1 for an eager model)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each scorer; the median counts")
    p.add_argument("--json", default=str(ROOT / "results" / "hellaswag-bench-cpu.json"))
    args = p.parse_args()

    torch.manual_seed(0)
    model = GPT(get_config(args.model)).eval()
    examples = load_examples(args.data, limit=args.n)
    scorers = {
        "one_per_forward": lambda: classic_score(model, examples),
        "batched": lambda: score(model, examples, batch_size=args.batch_size, bucket=args.bucket),
        "scorer_batch_size_1": lambda: score(model, examples, batch_size=1, bucket=1),
    }
    load_before = os.getloadavg()
    results = {}
    for name, fn in scorers.items():
        sums, means = fn()  # warm-up, and the predictions to compare
        results[name] = {"predictions": (sums.argmin(1).tolist(), means.argmin(1).tolist())}
    same = len({str(r.pop("predictions")) for r in results.values()}) == 1
    for _ in range(args.repeats):  # interleaved, so load changes on a shared machine hit all alike
        for name, fn in scorers.items():
            results[name].setdefault("seconds", []).append(timed(fn))
    for r in results.values():
        r["examples_per_s"] = len(examples) / statistics.median(r["seconds"])
        r["examples_per_s_best"] = len(examples) / min(r["seconds"])  # least disturbed by other processes
    ratio = results["batched"]["examples_per_s"] / results["one_per_forward"]["examples_per_s"]
    ratio_best = results["batched"]["examples_per_s_best"] / results["one_per_forward"]["examples_per_s_best"]
    ratio_batching = results["batched"]["examples_per_s"] / results["scorer_batch_size_1"]["examples_per_s"]

    report = {
        "benchmark": "hellaswag scoring, batched vs one example per forward",
        "n_examples": len(examples),
        "data": Path(args.data).name,  # the file's name: a path would be the measuring machine's
        "model": {"preset": args.model, **get_config(args.model).__dict__, "weights": "random (seed 0)"},
        "batch_size": args.batch_size,
        "bucket": args.bucket,
        "repeats": args.repeats,
        "same_predictions": same,
        **results,
        "ratio": ratio,
        "ratio_best_runs": ratio_best,
        "ratio_batching_alone": ratio_batching,
        "hardware": {**hardware_record("cpu"), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    for name, r in results.items():
        secs = ", ".join(f"{s:.2f}" for s in r["seconds"])
        speed = f"{r['examples_per_s']:7.1f} examples/s median, {r['examples_per_s_best']:7.1f} best"
        print(f"{name:>24}: {speed}  (runs: {secs} s)")
    print(f"ratio batched / one-per-forward: {ratio:.2f}x median, {ratio_best:.2f}x best runs  "
          f"(batching alone, scorer at batch {args.batch_size} / batch 1: {ratio_batching:.2f}x; same predictions: {same})")
    print(f"{len(examples)} examples from {args.data}; {args.model}; {report['hardware']['cpu']}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, load {load_before[0]:.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
