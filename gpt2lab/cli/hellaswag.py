"""`python -m gpt2lab hellaswag`: score a checkpoint or pretrained GPT-2 on HellaSwag (gpt2lab.run.hellaswag scores).

Inputs are checked before a model is loaded (a bad --json fails now, not after the evaluation); the result
prints beside OpenAI GPT-2 124M's and GPT-3 Small's cited figures, with its 95% interval.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt2lab.base.download import sha256_file
from gpt2lab.base.errors import UserError
from gpt2lab.engine.pretrained import load_gpt2
from gpt2lab.run import hellaswag


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="a checkpoint of `gpt2lab train` (file or run folder)")
    src.add_argument("--pretrained", metavar="NAME_OR_DIR", help="gpt2, gpt2-medium, ... (download) or a local HF folder")
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N examples")
    parser.add_argument(
        "--data", metavar="PATH",
        help=f"local hellaswag_val.jsonl (default: ${hellaswag.DATA_ENV}, else download it once into the cache)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here (a file; replaced)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or mps (default: auto, which picks cuda, then mps, then cpu)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="examples per forward pass, 4 rows each (default: 16)")


def check_inputs(args) -> None:
    """Everything checked before a model is loaded, so a bad --json fails now, not after the evaluation."""
    from gpt2lab.run import checkpoint
    from gpt2lab.base import dist
    from gpt2lab.base.checks import input_file, output_file

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    problem = dist.device_problem(args.device)
    if problem:
        raise UserError(f"--device {args.device}: {problem}")
    if args.json:
        output_file(args.json, "--json")
    if args.data:
        input_file(args.data, "--data")
    if args.checkpoint:
        checkpoint.check_input(args.checkpoint, "--checkpoint")


def run(args) -> int:
    from gpt2lab.base import dist

    check_inputs(args)
    device = dist.pick_device(args.device)
    try:
        path = hellaswag.data_path(args.data)
        examples = hellaswag.load_examples(path, limit=args.limit)
    except (OSError, ValueError) as e:  # missing file, no network, checksum, malformed line
        raise UserError(f"--data: {e}" if args.data else str(e)) from e
    model, source = _load_model(args)
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as e:  # a device that passed the check but fails to initialise
        raise UserError(f"--device {args.device}: cannot use it ({e})") from e
    result = hellaswag.evaluate(model, examples, device=device, batch_size=args.batch_size, progress=True)
    sha = sha256_file(path)
    official = sha == hellaswag.OFFICIAL_SHA256
    print(f"{result.n} examples from {path}{'' if official else ' (not the official file)'}, model {source}")
    print("accuracy, its 95% Wilson interval on these examples, and chance:")
    print(f"acc      {result.describe(norm=False)}   (OpenAI GPT-2 124M: {hellaswag.GPT2_124M['acc']})")
    print(f"acc_norm {result.describe(norm=True)}   "
          f"(OpenAI GPT-2 124M: {hellaswag.GPT2_124M['acc_norm']}, GPT-3 Small: {hellaswag.GPT3_124M['acc_norm']})")
    if args.json:
        out = {
            **result.to_dict(),
            "model": source,
            "data": str(path),
            "data_sha256": sha,
            "official_data": official,
            "limit": args.limit,
            "reference": {"gpt2_124m": hellaswag.GPT2_124M, "gpt3_124m": hellaswag.GPT3_124M},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _load_model(args):
    import pickle

    from gpt2lab.run import checkpoint

    if args.pretrained:
        try:
            return load_gpt2(args.pretrained), f"pretrained:{args.pretrained}"
        except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as e:  # offline, not GPT-2
            raise UserError(f"cannot load --pretrained {args.pretrained}: {checkpoint.unreadable_reason(None, e)}") from None
    return checkpoint.load_model(args.checkpoint), f"checkpoint:{args.checkpoint}"
