"""The training loop: `python -m gpt2lab train --preset NAME --out-dir DIR [--resume]`.

One optimizer step = `gpt2lab.step.train_step` (shared with the benchmark) over grad_accum micro-batches.
Around it: the learning-rate schedule, validation loss, HellaSwag, samples, a JSONL log, atomic checkpoints,
exact resume, and DDP when launched with torchrun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from gpt2lab import checkpoint, dist
from gpt2lab.config import PRESETS, TrainConfig, field_types, get_preset
from gpt2lab.corpus import CORPORA
from gpt2lab.data import ShardLoader
from gpt2lab.errors import TrainingDiverged, UserError
from gpt2lab.knobs import build, get_rung, keep_freed_memory, matmul_precision, resolve_rung, unsupported_reason
from gpt2lab.model import get_config
from gpt2lab.optim import lr_at
from gpt2lab.step import train_step
from gpt2lab.tokenizer import VOCAB_SIZE, decode, encode

LOG = "log.jsonl"


def resolve_data(cfg: TrainConfig, info: dist.DistInfo) -> Path:
    """A shard folder; a packaged corpus name is prepared into the cache on first use (by rank 0)."""
    if cfg.data not in CORPORA:
        return Path(cfg.data)
    from gpt2lab.prepare import corpus_shards

    if info.is_master:
        corpus_shards(cfg.data, cfg.shard_size)
    if info.ddp:
        torch.distributed.barrier()
    return corpus_shards(cfg.data, cfg.shard_size)  # every rank: the path, now prepared


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
                 progress: bool = True, echo: bool = True):
        cfg.validate()
        self.cfg, self.out = cfg, Path(out_dir)
        self.info = dist.init(cfg.device)
        self.echo, self.progress = echo and self.info.is_master, progress and self.info.is_master
        try:
            knobs = get_rung(resolve_rung(cfg.rung, self.info.device)).knobs
        except ValueError as e:
            raise UserError(str(e)) from None
        knobs = replace(knobs, **{k: v for k, v in (("compile", cfg.compile), ("autocast", cfg.autocast)) if v is not None})
        reason = unsupported_reason(knobs, self.info.device)
        if reason:
            raise UserError(f"rung {cfg.rung!r} cannot run on {self.info.device}: {reason}; "
                            "override with --compile false / --autocast none, or pick another --rung")
        self.knobs = knobs
        self.grad_accum = cfg.grad_accum(self.info.world_size)
        try:
            model_cfg = get_config(cfg.model)
        except ValueError as e:
            raise UserError(str(e)) from None
        if cfg.seq_len > model_cfg.block_size:
            raise UserError(f"seq_len {cfg.seq_len} exceeds model {cfg.model!r} block_size {model_cfg.block_size}")
        data_dir = resolve_data(cfg, self.info)
        self.train_loader = ShardLoader(data_dir, "train", cfg.batch_size, cfg.seq_len,
                                        self.info.rank, self.info.world_size, seed=cfg.seed)
        self.val_loader = ShardLoader(data_dir, "val", cfg.batch_size, cfg.seq_len,
                                      self.info.rank, self.info.world_size, seed=cfg.seed)
        if self.info.device.type == "cpu":
            keep_freed_memory()
        self.optim = cfg.optim()
        self.built = build(knobs, model_cfg, self.info.device, self.optim,
                           ddp_local_rank=self.info.local_rank if self.info.ddp else None, seed=cfg.seed)
        self.step = 0
        self.hellaswag_examples = None
        if resume:
            self._resume()
        elif self.info.is_master:
            self.out.mkdir(parents=True, exist_ok=True)
            if (self.out / checkpoint.LATEST).exists():
                raise UserError(f"{self.out} already holds a run; pass --resume to continue it or pick another --out-dir")
            (self.out / LOG).write_text("")
        if self.info.is_master:
            run_info = {"config": asdict(cfg), "knobs": asdict(knobs), "world_size": self.info.world_size,
                        "grad_accum": self.grad_accum, "device": str(self.info.device),
                        "params": self.built.raw.num_params(), "decay": str(self.built.decay_report)}
            (self.out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")
            if self.echo:
                print(f"{cfg.model}: {run_info['params']:,} parameters on {self.info.device} x{self.info.world_size}, "
                      f"rung {cfg.rung} ({knobs.describe()})\n{run_info['decay']}\n"
                      f"{cfg.total_batch:,} tokens/step = {cfg.batch_size} x {cfg.seq_len} x {self.info.world_size} "
                      f"process(es) x {self.grad_accum} micro-steps; {'resuming at step ' + str(self.step) if resume else 'new run'} "
                      f"in {self.out}")

    # ---- bookkeeping -------------------------------------------------------------------------------
    def log(self, record: dict, line: str | None = None) -> None:
        if not self.info.is_master:
            return
        with open(self.out / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        if line and self.echo:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def state(self) -> dict:
        return {
            "model": self.built.raw.state_dict(),
            "optimizer": self.built.optimizer.state_dict(),
            "step": self.step,
            "loader": self.train_loader.state_dict(),
            "rng": checkpoint.rng_state(),
            "model_config": asdict(self.built.raw.config),
            "train_config": asdict(self.cfg),
        }

    def save(self) -> None:
        if self.info.is_master:
            checkpoint.save(self.state(), self.out / checkpoint.LATEST)

    def _resume(self) -> None:
        state = checkpoint.load(self.out / checkpoint.LATEST)
        if state["model_config"] != asdict(self.built.raw.config):
            raise UserError(f"{self.out}: checkpoint model {state['model_config']} differs from this run's")
        self.built.raw.load_state_dict(state["model"])
        self.built.optimizer.load_state_dict(state["optimizer"])
        self.train_loader.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        self.step = state["step"]
        if self.info.is_master:  # drop log lines of steps after the checkpoint: they will be redone
            lines = (self.out / LOG).read_text().splitlines() if (self.out / LOG).exists() else []
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] < self.step]
            (self.out / LOG).write_text("".join(ln + "\n" for ln in kept))

    def _due(self, every: int, last: bool) -> bool:
        return every > 0 and (self.step % every == 0 or last)

    # ---- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def val_loss(self) -> float:
        self.val_loader.reset()
        total = torch.zeros((), device=self.info.device)
        for _ in range(self.cfg.val_steps):
            x, y = (t.to(self.info.device) for t in self.val_loader.next_batch())
            with self.built.autocast():
                _, loss = self.built.model(x, y)
            total += loss.detach()
        return dist.mean(total / self.cfg.val_steps, self.info).item()

    def hellaswag(self) -> dict:
        from gpt2lab import hellaswag

        if self.hellaswag_examples is None:
            self.hellaswag_examples = hellaswag.load_examples(self.cfg.hellaswag_data, limit=self.cfg.hellaswag_limit)
        result = hellaswag.evaluate(self.built.model, self.hellaswag_examples, device=self.info.device,
                                    autocast=self.built.autocast, rank=self.info.rank,
                                    world_size=self.info.world_size)
        return result.to_dict()

    def samples(self, n: int = 4) -> list[str]:
        prompt = torch.tensor([encode(self.cfg.sample_prompt)] * n, device=self.info.device)
        gen = torch.Generator(device=self.info.device).manual_seed(self.cfg.seed + self.info.rank)
        with self.built.autocast():
            out = self.built.raw.generate(prompt, self.cfg.sample_tokens, temperature=1.0, top_k=50, generator=gen)
        # a padded vocabulary's extra rows are not tokens: drop any the untrained model samples
        return [decode(t for t in row.tolist() if t < VOCAB_SIZE) for row in out]

    # ---- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train from the current step to max_steps (or stop_after steps); returns a summary."""
        from tqdm.auto import tqdm

        end = self.cfg.max_steps if self.cfg.stop_after is None else min(self.cfg.max_steps, self.step + self.cfg.stop_after)
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, unit="step", disable=not self.progress, desc="train")
        last_loss = float("nan")
        with matmul_precision(self.knobs):  # process-global: set for the run, restored after it
            try:
                while self.step < end:
                    last_loss = self._step(end)
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.3f}")
            finally:
                bar.close()
        return {"step": self.step, "train_loss": last_loss, "out_dir": str(self.out)}

    def _next_batch(self):
        x, y = self.train_loader.next_batch()
        return x.to(self.info.device, non_blocking=True), y.to(self.info.device, non_blocking=True)

    def _step(self, end: int) -> float:
        """Evaluations due at this step, one optimizer step, its log line and a checkpoint if due."""
        cfg = self.cfg
        last = self.step == cfg.max_steps - 1
        if self._due(cfg.val_every, last):
            v = self.val_loss()
            self.log({"type": "val", "step": self.step, "val_loss": v}, f"step {self.step:5d} | val loss {v:.4f}")
        if self._due(cfg.hellaswag_every, last):
            h = self.hellaswag()
            self.log({"type": "hellaswag", "step": self.step, **h},
                     f"step {self.step:5d} | hellaswag acc_norm {h['acc_norm']:.4f} ({h['correct_norm']}/{h['n']})")
        if self.info.is_master and self.step > 0 and self._due(cfg.sample_every, last):
            texts = self.samples()
            self.log({"type": "sample", "step": self.step, "text": texts}, "\n".join(f"sample: {t!r}" for t in texts))
        t0 = time.perf_counter()
        lr = lr_at(self.step, self.optim)
        result = train_step(self.built, self._next_batch, self.grad_accum, lr=lr, grad_clip=cfg.grad_clip)
        loss = dist.mean(result.loss, self.info).item()  # .item() waits for the device
        norm = result.grad_norm.item()
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            saved = self.out / checkpoint.LATEST
            kept = f"the last good checkpoint is {saved}" if saved.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(f"loss became {loss} at step {self.step}; stopped, {kept}")
        tok_s = cfg.total_batch / dt
        record = {"type": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                  "ms": dt * 1000, "tokens_per_s": tok_s}
        line = f"step {self.step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | {dt * 1000:.1f} ms | {tok_s:,.0f} tok/s"
        self.log(record, line if self.step % cfg.log_every == 0 else None)
        self.step += 1
        if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step in (end, cfg.max_steps):
            self.save()
        return loss


def train(cfg: TrainConfig, out_dir, resume: bool = False, progress: bool = True, echo: bool = True) -> dict:
    """Run (or continue) a training run; returns a summary. The Python face of `gpt2lab train`."""
    return Trainer(cfg, out_dir, resume=resume, progress=progress, echo=echo).fit()


def read_log(out_dir, kind: str = "train") -> list[dict]:
    path = Path(out_dir) / LOG
    return [r for r in (json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()) if r["type"] == kind]


# ---- command line ------------------------------------------------------------------------------------
def _parse_value(kind: type, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="gpt2-124m-fineweb10b", choices=list(PRESETS),
                   help="run settings to start from (default: gpt2-124m-fineweb10b, the video's run)")
    p.add_argument("--out-dir", default=None, help="run folder for log.jsonl and checkpoints (default: runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group("overrides (each replaces one preset value)")
    for name, kind in field_types().items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"set_{name}", default=None, metavar=kind.__name__.upper(),
                           type=lambda s, k=kind: _parse_value(k, s))


def run(args: argparse.Namespace) -> int:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
    cfg = get_preset(args.preset, **overrides)
    out = args.out_dir or os.path.join("runs", args.preset)
    try:
        summary = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    finally:
        dist.shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary['step']} steps, last train loss {summary['train_loss']:.4f}, run folder {summary['out_dir']}")
    return 0
