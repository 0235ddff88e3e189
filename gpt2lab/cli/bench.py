"""`python -m gpt2lab bench`: time the optimization ladder on this hardware (the command line of
`gpt2lab.measure.ladder`; the table and plot come from `gpt2lab.measure.report`).

    python -m gpt2lab bench --rungs all --json results/ladder.jsonl --plot results/ladder.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gpt2lab.base.checks import output_file
from gpt2lab.base.errors import UserError
from gpt2lab.base.hardware import resolve_device
from gpt2lab.engine.knobs import RUNGS
from gpt2lab.measure.ladder import DEFAULT_SEED, check_settings, resolve_rungs, run_ladder
from gpt2lab.measure.records import append_jsonl
from gpt2lab.engine.model import SHAPES, get_config
from gpt2lab.measure.report import ladder_table, plot_ladder

# On a GPU, the video's setting. On a CPU, a small model and batch so all rungs, including the cold
# torch.compile runs, finish in a few minutes on 2 cores.
GPU_DEFAULTS = dict(model="gpt2", batch_size=16, seq_len=1024, steps=20, warmup=3)
CPU_DEFAULTS = dict(model="cpu-small", batch_size=4, seq_len=128, steps=10, warmup=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def both(name):
        return f"{GPU_DEFAULTS[name]} on CUDA, {CPU_DEFAULTS[name]} on CPU"

    parser.add_argument("--model", "--preset", dest="model", metavar="MODEL",
                        help=f"model shape: {', '.join(SHAPES)} (default: {both('model')})")
    parser.add_argument("--rungs", default="all",
                        help=f"'all', 'video' (the video's rungs, chapters 4-10) or a comma list of: {','.join(RUNGS)}")
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, metavar="B",
                        help=f"micro-batch size B (default: {both('batch_size')})")
    parser.add_argument("--seq-len", "--seq", dest="seq_len", type=int, metavar="T",
                        help=f"sequence length T (default: {both('seq_len')}, at most the model's block size)")
    parser.add_argument("--steps", type=int, help=f"timed steps per rung (default: {both('steps')})")
    parser.add_argument("--warmup", type=int,
                        help=f"untimed warm-up steps per rung, compilation included (default: {both('warmup')})")
    parser.add_argument("--device",
                        help="auto, cpu, cuda, cuda:N or mps (default: auto, which picks cuda, then mps, then cpu)")
    parser.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                        help="peak TFLOP/s for MFU on hardware without a datasheet figure here (e.g. a CPU)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="initial weights, the same for every rung")
    parser.add_argument("--json", metavar="PATH", help="append one JSON line per rung to this results file")
    parser.add_argument("--plot", metavar="PATH", help="save the ladder plot here (.png, .svg, .pdf, ...)")


def check_output(path: str, option: str, suffixes: set[str] | None = None) -> None:
    """Fail before a minutes-long run, not after it: a known image format where one is needed, and a file
    that can be written (`gpt2lab.base.checks.output_file`)."""
    p = Path(path)
    if suffixes is not None and p.suffix.lower().lstrip(".") not in suffixes:
        raise UserError(f"{option} {path}: unknown image format {p.suffix or '(none)'!r}; "
                        f"use one of {', '.join('.' + s for s in sorted(suffixes))}")
    output_file(p, option)


def check_appendable(path: str, option: str) -> None:
    """A results file we append to must already be one (JSON lines of rungs), so a typo never adds ladder
    lines to some other file."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "rung" not in record:
            raise UserError(f"{option} {path}: not a ladder results file (line {n} is not a rung's JSON line); "
                            "name a new file or an existing ladder .jsonl")


def _image_formats() -> set[str]:
    import matplotlib.figure

    return set(matplotlib.figure.Figure().canvas.get_supported_filetypes())


def run(args) -> int:
    device = resolve_device(args.device)
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    model = args.model or defaults["model"]
    if model not in SHAPES:
        raise UserError(f"--model {model}: unknown model; choose one of {', '.join(SHAPES)}")
    config = get_config(model)
    given = {k: getattr(args, k) for k in ("batch_size", "seq_len", "steps", "warmup")}
    opts = {k: defaults[k] if v is None else v for k, v in given.items()}
    if given["seq_len"] is None:
        opts["seq_len"] = min(opts["seq_len"], config.block_size)  # defaults fit the chosen model
    flags = {"batch": "--batch-size", "seq": "--seq-len", "steps": "--steps", "warmup": "--warmup",
             "peak TFLOP/s": "--peak-tflops"}
    try:
        check_settings(config, opts["batch_size"], opts["seq_len"], opts["steps"], opts["warmup"], args.peak_tflops)
        rungs = resolve_rungs(args.rungs)
    except ValueError as e:
        message = str(e)
        for word, flag in flags.items():
            if message.startswith(word + " "):
                message = f"{flag}: {message}"
                break
        else:
            message = f"--rungs {args.rungs}: {message}" if "rung" in message else message
        raise UserError(message) from None
    if args.json:
        check_output(args.json, "--json")
        check_appendable(args.json, "--json")
    if args.plot:
        check_output(args.plot, "--plot", _image_formats())

    t0 = time.perf_counter()
    results = run_ladder(rungs, model, opts["batch_size"], opts["seq_len"], opts["steps"], opts["warmup"], device,
                         peak_tflops=args.peak_tflops, seed=args.seed)
    wall_s = time.perf_counter() - t0
    print(ladder_table(results))
    print(f"ladder wall time: {wall_s:.0f} s (model builds, warm-up and compilation included)")
    noisy = [r.rung for r in results if r.noisy]
    if noisy:
        print(f"warning: the step times of {', '.join(noisy)} spread widely; verdicts between rungs may flip. "
              f"Repeat with more steps (e.g. --steps {max(3 * opts['steps'], 30)}) on a quieter machine.")
    if args.json:
        append_jsonl(args.json, results)
        print(f"appended {len(results)} lines to {args.json}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_ladder(results).savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot saved to {args.plot}")
    return 1 if any(r.guard_ok is False for r in results) else 0
