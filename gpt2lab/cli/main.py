"""`python -m gpt2lab COMMAND ...`: one entry point, one module per command.

Each command module defines `add_arguments(parser)` and `run(args) -> int | None`. `run` checks its inputs
before it starts any work, so a mistake costs seconds, not a finished run. Every user error, from argparse
(an unknown flag, a bad number) or from a `UserError` (bad path, bad value, missing data, no GPU), is one
line on stderr naming the flag as typed, exit status 2, no traceback; a diverged training run exits 3 the
same way.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import re
import sys

from gpt2lab.base.errors import GPT2LabError, one_line

COMMANDS = {
    "prepare": ("gpt2lab.engine.prepare", "tokenize a corpus (Hugging Face dataset or local files) into uint16 shards"),
    "train": ("gpt2lab.cli.train", "train a GPT from a preset, on one device or many (torchrun)"),
    "bench": ("gpt2lab.cli.bench", "time the optimization ladder (fp32 -> ... -> fused AdamW) on this hardware"),
    "hellaswag": ("gpt2lab.cli.hellaswag", "evaluate a checkpoint or pretrained GPT-2 on HellaSwag"),
    "verify": ("gpt2lab.engine.verify", "check every shard of a prepared dataset against its manifest (sha256)"),
    "sample": ("gpt2lab.run.sample", "generate text from a checkpoint or pretrained GPT-2 (seeded, reproducible)"),
}

# OS errors that come from the user's machine, not from a bug: reported in one line like a UserError.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (`gpt2lab train: error: ...`), not a usage block."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse (before 3.13) takes `--max-lr -1e-3` or `--grad-clip -inf` for a flag with no value, which
        # hides the real mistake; read them as numbers, so the value check can name them.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|nan)$", re.I)

    def error(self, message: str):
        name = self.prog.removeprefix("python -m ")
        self.exit(2, f"{name}: error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # The top parser reports flags no subcommand knew; say which command they were given to, and the
        # nearest real flag, instead of "gpt2lab: error: unrecognized arguments".
        args, extras = super().parse_known_args(args, namespace)
        sub = getattr(self, "_commands", {}).get(getattr(args, "command", None))
        if extras and sub is not None:
            flags = [s for a in sub._actions for s in a.option_strings if not a.help == argparse.SUPPRESS]
            close = difflib.get_close_matches(extras[0].split("=")[0], flags, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            sub.error(f"unrecognized argument(s): {' '.join(extras)}{hint}")
        return args, extras


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m gpt2lab",
        description="Reproduce GPT-2 (124M) pretraining step by step: prepare data, train, time the speed "
                    "ladder, evaluate on HellaSwag. Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser._commands = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
        parser._commands[name] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status. argparse errors and --help raise SystemExit (2 and 0)."""
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except GPT2LabError as e:
        print(f"gpt2lab {args.command}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"gpt2lab {args.command}: error: {e.strerror or one_line(e)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpt2lab {args.command}: interrupted", file=sys.stderr)
        return 130
