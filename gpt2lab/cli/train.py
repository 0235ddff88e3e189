"""`python -m gpt2lab train`: the command line of a training run (gpt2lab.run.train composes and runs it).

Flags are the preset's settings, one per TrainConfig field (`--max-steps 50` replaces max_steps), checked before
any work starts: the device, the data, the run folder (no live run in it, no other run's files for a new one,
a checkpoint for --resume), the HellaSwag file. A resume takes the run's saved settings and refuses flags that
would change its computation.
"""

from __future__ import annotations

import argparse
import math
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import torch

from gpt2lab.base import dist
from gpt2lab.base.checks import flag, input_file, output_folder
from gpt2lab.base.errors import UserError
from gpt2lab.base.shell import python_command
from gpt2lab.engine.corpus import CORPORA
from gpt2lab.engine.data import MANIFEST
from gpt2lab.engine.recipes import IDEAS
from gpt2lab.run import checkpoint
from gpt2lab.run.config import PRESETS, TrainConfig, choices, field_help, field_types, get_preset
from gpt2lab.run.folder import locked, refuse_existing_run, restartable_info
from gpt2lab.run.train import DEFAULT_PRESET, plan, run_plan


def _parse_value(kind: type, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else kind.__name__}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "%(prog)s [--preset PRESET] [--out-dir DIR] [--resume] [--no-progress] [--SETTING VALUE ...]"
    p.add_argument("--preset", default=None, choices=list(PRESETS), metavar="PRESET",
                   help=f"run settings to start from, one of: {', '.join(PRESETS)} (default: {DEFAULT_PRESET}, "
                        "the video's run; a --resume takes the run's own)")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="run folder for log.jsonl and checkpoints (default: runs/PRESET)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its newest checkpoint, with its saved settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group("settings (each replaces one value of --preset)")
    helps, allowed = field_help(), choices()
    for name, kind in field_types().items():
        text, extra = helps.get(name, ""), {}
        if name in allowed:
            extra = {"choices": allowed[name]}
            text += f"; one of: {', '.join(allowed[name])}"
        elif name == "device":
            text += f"; one of: {dist.DEVICE_CHOICES}"
        elif name == "recipe":
            text += f"; the ideas: {', '.join(IDEAS)}"
        metavar = ("{true,false}" if kind is bool else name.upper() if name in allowed or name in ("device", "recipe")
                   else "PATH" if name in ("data", "hellaswag_data") else {int: "N", float: "X", str: "TEXT"}[kind])
        group.add_argument(flag(name), dest=f"set_{name}", default=None, metavar=metavar, help=text,
                           type=lambda s, k=kind: _parse_value(k, s), **extra)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with the flags' overrides, checked, with errors naming the flags."""
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
    cfg = replace(get_preset(args.preset or DEFAULT_PRESET), **overrides)
    cfg.validate(name=flag)
    cfg.grad_accum(int(os.environ.get("WORLD_SIZE", "1")), name=flag)
    return cfg


def check_inputs(cfg: TrainConfig, args: argparse.Namespace, out: Path) -> None:
    """Everything `train` can check before it builds a model: device, data, run folder, HellaSwag file."""
    source = "the run being resumed" if args.resume else f"--preset {args.preset or DEFAULT_PRESET}"
    problem = dist.device_problem(cfg.device)
    if problem and args.set_device is None:
        raise UserError(f"{source} trains on {cfg.device}, but {problem}; use a preset for this "
                        f"machine (e.g. --preset cpu-tiny-shakespeare), or --device cpu to run this one on the CPU")
    if problem:
        raise UserError(f"--device {cfg.device}: {problem}")
    if cfg.data not in CORPORA and not (Path(cfg.data) / MANIFEST).is_file():
        given = f"--data {cfg.data}" if args.set_data else f"{source} reads {cfg.data}, which"
        if args.preset is None and not args.set_data and not torch.cuda.is_available():  # no GPU, no preset named
            raise UserError(f"no --preset given: the default, {DEFAULT_PRESET}, is the video's 8-GPU run on data "
                            f"prepared from 10B tokens; this machine has no GPU: start with `{python_command()} -m "
                            "gpt2lab train --preset cpu-tiny-shakespeare` (minutes on a CPU)")
        raise UserError(f"{given} is not a prepared shard folder (no {MANIFEST}); make it with `python -m gpt2lab "
                        f"prepare --out {cfg.data}`, or pass --data with a shard folder or a packaged corpus "
                        f"({', '.join(CORPORA)})")
    output_folder(out, "--out-dir")
    if args.resume:
        _checkpoint_to_resume(out)
    else:
        refuse_existing_run(out, f"--out-dir {out}")
    if cfg.hellaswag_every:
        from gpt2lab.run import hellaswag

        if cfg.hellaswag_data:
            input_file(cfg.hellaswag_data, "--hellaswag-data")
        try:
            path = hellaswag.data_path(cfg.hellaswag_data)  # downloaded now (once) if needed, not at step 0
            hellaswag.load_examples(path, limit=cfg.hellaswag_limit)  # read as the run will: a bad line fails now
        except (OSError, ValueError) as e:
            raise UserError(f"--hellaswag-every {cfg.hellaswag_every} needs the HellaSwag data: {e}; "
                            "--hellaswag-every 0 trains without it") from None


def _checkpoint_to_resume(out: Path) -> Path | None:
    """The newest checkpoint in `out`, checked to be a torch.save file (cheap; the full load comes later), or None
    for a run that stopped before its first checkpoint (it starts again from its run.json)."""
    found = checkpoint.latest(out) if out.is_dir() else None
    if found is None:
        if restartable_info(out) is not None:
            return None
        raise UserError(f"--resume: --out-dir {out} holds no checkpoint to continue; start a new run there "
                        "without --resume")
    if not zipfile.is_zipfile(found):
        raise UserError(f"--resume: {found} is not a checkpoint (not a file written by torch.save)"
                        f"{checkpoint.older_intact(found)}")
    return found


def run(args: argparse.Namespace) -> int:
    out = Path(args.out_dir or os.path.join("runs", args.preset or DEFAULT_PRESET))
    output_folder(out, "--out-dir")
    with locked(out, create=False):  # a live run there is refused before anything reads the folder
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    if args.resume:  # the run's saved settings plus the flags given now (refused if they change the computation)
        _checkpoint_to_resume(out)
        overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
        p = plan(out, resume=True, preset=args.preset, overrides=overrides)
    else:
        p = plan(out, config_from_args(args), preset=args.preset or DEFAULT_PRESET)
    check_inputs(p.cfg, args, out)
    try:
        summary = run_plan(p, progress=not args.no_progress)
    finally:
        dist.shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        if summary.get("finished_before"):
            print(f"nothing to do: the run in {summary['out_dir']} already finished all {summary['step']} steps "
                  f"(last train loss {summary['train_loss']:.4f})")
        else:
            print(f"done: {summary['step']} steps, last train loss {summary['train_loss']:.4f}, "
                  f"run folder {summary['out_dir']}")
    return 0
