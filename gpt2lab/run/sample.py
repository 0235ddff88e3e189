"""Text from a model: `python -m gpt2lab sample --checkpoint RUN --prompt "ROMEO:" --tokens 64 --seed 0`.

Sampling is seeded with its own `torch.Generator`, so the same checkpoint, prompt and seed give the same
text on the same machine, whatever else the process has drawn from the global random state. Checkpoints are
read by `gpt2lab.run.checkpoint.load_model`, the loader `hellaswag` and the chapters use too.

GPT-2's vocabulary contains the 256 single bytes, and a character outside ASCII (’, é, —) can be split over
two or three tokens. A sample cut after N tokens, or a barely trained model putting byte tokens in an order
no UTF-8 text has, leaves byte sequences that are not valid UTF-8. `decode_text` shows such bytes as
escapes (`\\xe2\\x80`) instead of the replacement character `�`, so the reader sees what the model produced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gpt2lab.base.errors import UserError
from gpt2lab.engine.model import GPT
from gpt2lab.engine.pretrained import load_gpt2
from gpt2lab.engine.tokenizer import VOCAB_SIZE, encode, get_encoding

def load_pretrained_model(name_or_path: str) -> GPT:
    try:
        return load_gpt2(name_or_path)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"--pretrained {name_or_path}: {' '.join(str(e).split())[:200]}") from None


def decode_text(tokens) -> str:
    """Text of GPT-2 tokens; bytes that are not valid UTF-8 appear as `\\xNN` escapes, not as `�`.
    Ids beyond GPT-2's vocabulary (the padded rows of vocab 50304) are not tokens and are dropped."""
    data = get_encoding().decode_bytes([t for t in tokens if t < VOCAB_SIZE])
    return data.decode("utf-8", errors="backslashreplace")


@torch.no_grad()
def sample(model: GPT, prompt: str, tokens: int = 32, top_k: int | None = 50, seed: int = 0,
           num_samples: int = 1, temperature: float = 1.0, device: str | torch.device = "cpu") -> list[str]:
    """`num_samples` continuations of `prompt` (the prompt included), reproducible for a given seed."""
    ids = encode(prompt)
    if not ids:
        raise UserError("--prompt must not be empty: the model needs at least one token to continue")
    if len(ids) >= model.config.block_size:
        raise UserError(f"--prompt is {len(ids)} tokens; this model reads at most {model.config.block_size - 1} "
                        "plus the one it predicts")
    device = torch.device(device)
    model = model.to(device).eval()
    idx = torch.tensor([ids] * num_samples, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, tokens, temperature=temperature, top_k=top_k, generator=gen)
    return [decode_text(row.tolist()) for row in out]


# ---- command line ------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="RUN", help="a `gpt2lab train` run folder or checkpoint file")
    src.add_argument("--pretrained", metavar="NAME_OR_PATH",
                     help="gpt2, gpt2-medium, ... (downloaded once) or a local Hugging Face GPT-2 folder")
    p.add_argument("--prompt", default="Hello, I'm a language model,", help="text to continue (default: the video's)")
    p.add_argument("--tokens", type=int, default=32, metavar="N", help="new tokens per sample (default: 32)")
    p.add_argument("--top-k", type=int, default=50, metavar="K", help="sample among the K likeliest tokens (default: 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="logits are divided by it; 0 = greedy (default: 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="same seed, same text (default: 0)")
    p.add_argument("--num-samples", type=int, default=4, metavar="M", help="continuations to print (default: 4)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")


MAX_TOKENS = 10_000  # new tokens per sample: beyond a 1,024-token context a GPT-2 slides; past this, a typo


def run(args: argparse.Namespace) -> int:
    for flag, value, least in (("--tokens", args.tokens, 1), ("--top-k", args.top_k, 1), ("--num-samples", args.num_samples, 1)):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if args.tokens > MAX_TOKENS:
        raise UserError(f"--tokens must be <= {MAX_TOKENS:,}, got {args.tokens:,}")
    if any("\udc80" <= c <= "\udcff" for c in args.prompt):  # bytes the shell passed that are not UTF-8
        raise UserError("--prompt is not valid UTF-8 text; pass the prompt in UTF-8")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise UserError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    from gpt2lab.base import dist

    problem = dist.device_problem(args.device)  # before loading any weights
    if problem:
        raise UserError(f"--device {args.device}: {problem}")
    if args.checkpoint is not None:
        from gpt2lab.run import checkpoint

        checkpoint.check_input(args.checkpoint, "--checkpoint")
        model, source = checkpoint.load_model(args.checkpoint), f"checkpoint {Path(args.checkpoint)}"
    else:
        model, source = load_pretrained_model(args.pretrained), f"pretrained {args.pretrained}"
    try:
        device = torch.device(args.device)
        texts = sample(model, args.prompt, args.tokens, args.top_k, args.seed, args.num_samples,
                       args.temperature, device)
    except (RuntimeError, AssertionError) as e:  # e.g. --device cuda without CUDA, or a bad device string
        raise UserError(f"--device {args.device}: {' '.join(str(e).split())[:200]}") from None
    print(f"# {source}, seed {args.seed}, top-k {args.top_k}, temperature {args.temperature}, {args.tokens} tokens")
    for i, text in enumerate(texts):
        print(f"--- sample {i}\n{text}")
    return 0
