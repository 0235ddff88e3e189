"""`python -m gpt2lab COMMAND ...`: one entry point, one module per command.

Each command module defines `add_arguments(parser)` and `run(args) -> int | None`. A `UserError`
(bad path, bad number, missing data) prints one clear line and exits 2, with no traceback; a diverged
training run exits 3 the same way.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gpt2lab.errors import GPT2LabError

COMMANDS = {
    "prepare": ("gpt2lab.prepare", "tokenize a corpus (Hugging Face dataset or local files) into uint16 shards"),
    "train": ("gpt2lab.train", "train a GPT from a preset, on one device or many (torchrun)"),
    "bench": ("gpt2lab.bench", "time the optimization ladder (fp32 -> ... -> fused AdamW) on this hardware"),
    "hellaswag": ("gpt2lab.hellaswag", "evaluate a checkpoint or pretrained GPT-2 on HellaSwag"),
    "sample": ("gpt2lab.sample", "generate text from a checkpoint or pretrained GPT-2 (seeded, reproducible)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt2lab",
        description="Reproduce GPT-2 (124M) pretraining step by step: prepare data, train, time the speed "
                    "ladder, evaluate on HellaSwag. Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except GPT2LabError as e:
        print(f"gpt2lab {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"gpt2lab {args.command}: interrupted", file=sys.stderr)
        return 130
