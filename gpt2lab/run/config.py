"""Training run configuration and named presets.

A preset is a complete TrainConfig; command-line flags override single fields
(`python -m gpt2lab train --preset cpu-tiny-shakespeare --max-steps 50`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import tokenize
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union, get_args, get_origin, get_type_hints

from gpt2lab.base.checks import flag
from gpt2lab.base.errors import UserError
from gpt2lab.engine.knobs import DEFAULT_RUNG
from gpt2lab.engine.optim import OptimConfig
from gpt2lab.engine.recipes import DEFAULT_RECIPE, canonical, get_recipe, recipe_choices
from gpt2lab.engine.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class TrainConfig:
    # Each field's trailing comment is also its `train --help` line (see `field_help`).
    # model and data
    model: str = "gpt2"  # model shape, a gpt2lab.engine.model preset
    data: str = "data/edu_fineweb10B"  # a prepared shard folder, or a packaged corpus name (tinyshakespeare)
    shard_size: int = 100_000_000  # tokens per shard when `data` names a packaged corpus, prepared on first use
    # batch: total_batch tokens per optimizer step = batch_size * seq_len * world_size * grad_accum
    batch_size: int = 64  # sequences per micro-batch on each process (B)
    seq_len: int = 1024  # tokens per sequence (T), at most the model's block size
    total_batch: int = 524_288  # tokens per optimizer step (2**19, ~0.5M as in GPT-3 Small), by gradient accumulation
    # optimization (GPT-3 paper hyper-parameters, as in the video)
    max_steps: int = 19_073  # optimizer steps of the whole run (10B tokens / 524,288 tokens per step)
    warmup_steps: int = 715  # linear learning-rate warm-up steps (375M tokens / 524,288)
    max_lr: float = 6e-4  # peak learning rate, reached after the warm-up
    min_lr_ratio: float = 0.1  # the cosine decay ends at max_lr times this (0 to 1)
    weight_decay: float = 0.1  # AdamW weight decay of the 2-D weights (embeddings and matmuls)
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables clipping)
    dropout: float = 0.0  # dropout in training (0 to <1); the video's run uses none, small data needs some
    recipe: str = DEFAULT_RECIPE  # changes past GPT-2 (gpt2lab.engine.recipes): gpt2 (none), modern (all), or a comma list of ideas
    # speed knobs: a ladder rung, with optional single-knob overrides
    rung: str = DEFAULT_RUNG  # speed settings: a rung of the optimization ladder (auto: the fastest one this device trains with)
    compile: Optional[bool] = None  # override the rung's torch.compile setting
    autocast: Optional[str] = None  # override the rung's autocast dtype
    device: str = "auto"  # where to train; auto picks cuda, then mps, then cpu
    seed: int = 1337  # initial weights and data order (0 to 2**32-1)
    deterministic: bool = False  # bit-exact resume on CUDA too, at some speed cost (see chapter 13)
    # evaluation and bookkeeping
    log_every: int = 1  # console line every N steps (the JSONL log gets every step)
    val_every: int = 250  # validation loss every N steps (0 disables)
    val_steps: int = 20  # micro-batches per validation loss
    hellaswag_every: int = 250  # HellaSwag accuracy every N steps (0 disables)
    hellaswag_limit: Optional[int] = None  # score only the first N HellaSwag examples
    hellaswag_data: Optional[str] = None  # local hellaswag_val.jsonl (else GPT2LAB_HELLASWAG or download)
    sample_every: int = 250  # print generated samples every N steps (0 disables)
    sample_prompt: str = "Hello, I'm a language model,"  # the samples' prompt
    sample_tokens: int = 32  # tokens generated per sample
    checkpoint_every: int = 5000  # save a checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 3  # newest step-numbered checkpoints kept (0 keeps all)
    stop_after: Optional[int] = None  # pause after this many steps; the schedule still targets max_steps

    def optim(self) -> OptimConfig:
        return OptimConfig(max_lr=self.max_lr, min_lr_ratio=self.min_lr_ratio, warmup_steps=self.warmup_steps,
                           max_steps=self.max_steps, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                           **get_recipe(self.recipe).optim)

    def model_overrides(self) -> dict:
        """The GPTConfig fields this run sets on its model preset: dropout, and the recipe's."""
        return {"dropout": self.dropout, **get_recipe(self.recipe).model}

    def validate(self, name: Callable[[str], str] = flag) -> None:
        """UserError with one line for the first bad setting. `name` spells a field in the message: by default
        as the flag a user types (`max_steps` as `--max-steps`), whether it came from the command line, a
        resume or Python."""

        def bad(field: str, problem: str):
            raise UserError(f"{name(field)} {problem}, got {getattr(self, field)!r}")

        for field in ("max_lr", "min_lr_ratio", "weight_decay", "grad_clip", "dropout"):
            if not math.isfinite(getattr(self, field)):
                bad(field, "must be a finite number")
        for field in ("batch_size", "seq_len", "total_batch", "max_steps", "val_steps", "log_every", "shard_size"):
            if getattr(self, field) < 1:
                bad(field, "must be positive")
        for field in ("warmup_steps", "val_every", "hellaswag_every", "sample_every", "checkpoint_every",
                      "keep_checkpoints", "sample_tokens", "weight_decay", "grad_clip"):
            if getattr(self, field) < 0:
                bad(field, "must be >= 0")
        for field in ("stop_after", "hellaswag_limit"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                bad(field, "must be positive")
        if self.max_lr <= 0:
            bad("max_lr", "must be positive")
        if not 0 <= self.min_lr_ratio <= 1:
            bad("min_lr_ratio", "must be between 0 and 1")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be at least 0 and below 1")
        if not 0 <= self.seed < 2**32:
            bad("seed", "must be between 0 and 2**32-1")
        try:
            get_recipe(self.recipe)
        except UserError:
            bad("recipe", f"must be {recipe_choices()}")
        for field, allowed in choices().items():
            if getattr(self, field) is not None and getattr(self, field) not in allowed:
                bad(field, f"must be one of {', '.join(allowed)}")
        block_size = model_presets()[self.model].block_size
        if self.seq_len > block_size:
            bad("seq_len", f"must be at most the block size of {name('model')} {self.model} ({block_size})")
        if self.sample_every and not self.sample_prompt:
            bad("sample_prompt", f"must not be empty while samples are on ({name('sample_every')} 0 turns them off)")

    def grad_accum(self, world_size: int, name: Callable[[str], str] = flag) -> int:
        per_step = self.batch_size * self.seq_len * world_size
        if self.total_batch % per_step:
            raise UserError(
                f"{name('total_batch')} {self.total_batch} is not divisible by "
                f"{name('batch_size')} x {name('seq_len')} x processes = "
                f"{self.batch_size} x {self.seq_len} x {world_size} = {per_step}"
            )
        return self.total_batch // per_step


PRESETS: dict[str, TrainConfig] = {
    # The video's run: GPT-2 124M on 10B tokens of FineWeb-Edu, one epoch.
    "gpt2-124m-fineweb10b": TrainConfig(),
    # Minutes on a 2-core laptop: a 4-layer, 64-wide GPT on Tiny Shakespeare (~300k train tokens), 1,600 steps of
    # 1,024 tokens (~5 epochs), dropout 0.1. The 50,304-wide head is most of the arithmetic, so a narrow model
    # sees more tokens per second (64 wide: ~8,200 tokens/s on 2 EPYC cores; 128 wide: ~6,500), and here tokens
    # seen matter more than width. Dropout 0.1 narrows the gap between train and val loss over five epochs; 0.2
    # held the model back. Small batches: at this size more updates per token learn faster. bf16 autocast (CPUs
    # with bf16 instructions run it faster than fp32; the book's cpu scale turns it off on CPUs without). The runs
    # behind these choices: results/cpu-tiny-shakespeare-preset.md.
    "cpu-tiny-shakespeare": TrainConfig(
        model="cpu-shakespeare", data="tinyshakespeare", shard_size=33_800, batch_size=8, seq_len=128,
        total_batch=1024, max_steps=1600, warmup_steps=20, max_lr=3e-3, dropout=0.1, rung="fused_adamw",
        compile=False, autocast="bf16", device="cpu", log_every=200, val_every=200, val_steps=8, hellaswag_every=0,
        sample_every=800, sample_prompt="ROMEO:", checkpoint_every=800,
    ),
    # The video's first debugging runs: GPT-2 124M on Tiny Shakespeare, B=16, T=1024, all GPU speed-ups on.
    "gpu-tiny-shakespeare": TrainConfig(
        model="gpt2", data="tinyshakespeare", shard_size=33_800, batch_size=16, seq_len=1024,
        total_batch=16_384, max_steps=100, warmup_steps=10, max_lr=6e-4, device="cuda", log_every=10,
        val_every=25, val_steps=2, hellaswag_every=0, sample_every=50, checkpoint_every=100,
    ),
    # Seconds: exercises every code path in tests and in the notebooks' smoke scale.
    "smoke": TrainConfig(
        model="cpu-tiny", data="tinyshakespeare", shard_size=33_800, batch_size=4, seq_len=64,
        total_batch=512, max_steps=8, warmup_steps=2, max_lr=1e-3, compile=False, autocast="none",
        device="cpu", log_every=1, val_every=4, val_steps=2, hellaswag_every=0, sample_every=4,
        sample_tokens=8, checkpoint_every=4,
    ),
}


# What a resumed run may set anew: when to evaluate, log, sample and checkpoint, and where to pause. None of
# it changes what is computed, so the resumed steps equal an uninterrupted run's. Everything else (model,
# data, batch, schedule, knobs, seed, ...) comes from the checkpoint.
MAY_CHANGE_ON_RESUME = frozenset({
    "log_every", "val_every", "val_steps", "hellaswag_every", "hellaswag_limit", "hellaswag_data",
    "sample_every", "sample_prompt", "sample_tokens", "checkpoint_every", "keep_checkpoints", "stop_after",
})


def shown(value) -> str:
    """A setting's value as it would be typed on the command line."""
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def saved_config(fields: dict) -> TrainConfig:
    """The TrainConfig a checkpoint recorded (fields added since it was written take their defaults)."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UserError(f"the checkpoint's settings include {', '.join(sorted(unknown))}, unknown to this gpt2lab")
    return TrainConfig(**fields)


def resume_config(saved: TrainConfig, given: dict) -> TrainConfig:
    """The run's saved settings, with the `given` values of the fields in MAY_CHANGE_ON_RESUME. A given value
    that differs from the saved one in any other field is refused, naming its flag and both values.
    `stop_after` belongs to one invocation: the resumed run does not inherit it."""
    def changes(name: str, value) -> bool:  # `relu2,rope` is the recipe `rope,relu2`
        return canonical(value) != canonical(saved.recipe) if name == "recipe" else value != getattr(saved, name)

    for name, value in given.items():
        if name not in MAY_CHANGE_ON_RESUME and changes(name, value):
            raise UserError(f"{flag(name)} {shown(value)} would change the run being resumed, which was started with "
                            f"{flag(name)} {shown(getattr(saved, name))}; a resume keeps the run's settings: drop the flag, "
                            "or start a new run in another --out-dir")
    allowed = {k: v for k, v in given.items() if k in MAY_CHANGE_ON_RESUME}
    cfg = replace(saved, **{"stop_after": None, **allowed})
    cfg.validate()
    return cfg


def get_preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    cfg = replace(PRESETS[name], **overrides)
    cfg.validate()
    return cfg


def field_types() -> dict[str, type]:
    """Each field's base type (Optional[int] -> int), for building command-line flags."""
    out = {}
    for name, hint in get_type_hints(TrainConfig).items():
        if get_origin(hint) is Union:
            hint = next(a for a in get_args(hint) if a is not type(None))
        out[name] = hint
    return out


def model_presets() -> dict:
    """The model shapes a run can train: those whose vocabulary holds every GPT-2 token."""
    from gpt2lab.engine.model import SHAPES

    return {name: cfg for name, cfg in SHAPES.items() if cfg.vocab_size >= VOCAB_SIZE}


def choices() -> dict[str, list[str]]:
    """The allowed values of the fields that have a fixed set of them (`--help` lists them)."""
    from gpt2lab.engine.knobs import AUTOCAST_DTYPES, RUNGS

    return {"model": list(model_presets()), "rung": ["auto", *RUNGS], "autocast": list(AUTOCAST_DTYPES)}


@functools.lru_cache(maxsize=1)
def field_help() -> dict[str, str]:
    """Each TrainConfig field's trailing comment in the source above: the one place a setting is explained."""
    try:
        source = inspect.getsource(TrainConfig)
    except OSError:  # no source shipped (e.g. a frozen build): flags without help text still work
        return {}
    out, line = {}, []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            line = []
        elif tok.type == tokenize.COMMENT and len(line) > 1 and line[0].type == tokenize.NAME and line[1].string == ":":
            out[line[0].string] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.INDENT, tokenize.DEDENT):
            line.append(tok)
    return out
