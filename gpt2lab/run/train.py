"""The training loop: `python -m gpt2lab train --preset NAME --out-dir DIR [--resume]`.

One optimizer step = `gpt2lab.engine.step.train_step` (shared with the benchmark) over grad_accum micro-batches.
Around it: the learning-rate schedule, validation loss, HellaSwag, samples, a JSONL log, step-numbered
checkpoints, stops at a step boundary (SIGTERM, Ctrl-C, a bad shard) that save a checkpoint first, exact
resume from the run's saved settings, and DDP when launched with torchrun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch

from gpt2lab.base import atomic, lock
from gpt2lab.run import checkpoint
from gpt2lab.base import dist
from gpt2lab.run import stop
from gpt2lab.base.checks import flag, input_file, output_folder
from gpt2lab.run.config import (PRESETS, TrainConfig, choices, field_help, field_types, get_preset, resume_config,
                            saved_config)
from gpt2lab.engine.corpus import CORPORA
from gpt2lab.engine.data import MANIFEST, ShardLoader
from gpt2lab.base.errors import RunStopped, TrainingDiverged, UserError
from gpt2lab.base.shell import python_command
from gpt2lab.engine.knobs import build, get_rung, keep_freed_memory, matmul_precision, resolve_rung, unsupported_reason
from gpt2lab.engine.model import get_config
from gpt2lab.engine.optim import lr_at
from gpt2lab.engine.recipes import IDEAS
from gpt2lab.base.stats import format_accuracy
from gpt2lab.engine.step import train_step
from gpt2lab.engine.tokenizer import VOCAB_SIZE, decode, encode

LOG = "log.jsonl"
DEFAULT_PRESET = "gpt2-124m-fineweb10b"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def resolve_data(cfg: TrainConfig, info: dist.DistInfo) -> Path:
    """A shard folder; a packaged corpus name is prepared into the cache on first use (by rank 0)."""
    if cfg.data not in CORPORA:
        return Path(cfg.data)
    from gpt2lab.engine.prepare import corpus_shards

    if info.is_master:
        corpus_shards(cfg.data, cfg.shard_size)
    if info.ddp:
        torch.distributed.barrier()
    return corpus_shards(cfg.data, cfg.shard_size)  # every rank: the path, now prepared


def prepare_determinism() -> None:
    """What must happen before CUDA starts for a deterministic run: cuBLAS picks its workspace layout once,
    when the CUDA runtime initializes, and only a fixed layout (CUBLAS_WORKSPACE_CONFIG=:4096:8, eight
    4 MiB buffers) makes its results independent of how work lands on its streams. PyTorch refuses cuBLAS
    calls in deterministic mode without it."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") in CUBLAS_DETERMINISTIC:
        return
    if torch.cuda.is_initialized():
        warnings.warn("CUBLAS_WORKSPACE_CONFIG is set after CUDA started in this process, so cuBLAS may keep "
                      "its earlier workspace; for a guaranteed bit-exact run start a fresh process (as the "
                      "command line does) or set it before the first CUDA call", stacklevel=3)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC[0]


@contextmanager
def deterministic_algorithms(enabled: bool):
    """Run-to-run identical kernels for the duration (process-global, restored after). On CUDA several
    backward kernels accumulate with atomics whose order varies from run to run (the embedding backward,
    the flash-attention backward's dQ): equal to rounding, not bit for bit. `use_deterministic_algorithms`
    switches those to deterministic versions (including SDPA's flash and memory-efficient backward),
    raises on ops that have none, and puts torch.compile's Inductor in its deterministic mode (no
    benchmarking that changes numerics). cuDNN's attention is switched off: the others have a
    deterministic backward. On CPU our kernels are deterministic already; this changes nothing there."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)


def _shape_difference(saved: dict, now: dict) -> tuple[str, str]:
    keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return (", ".join(f"{k}={saved.get(k)}" for k in keys), ", ".join(f"{k}={now.get(k)}" for k in keys))


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
                 progress: bool = True, echo: bool = True, preset: str | None = None):
        self.out = Path(out_dir)
        saved = None
        if resume:  # the run's own settings, not the preset's: see config.resume_config
            found = checkpoint.latest(self.out)
            if found is None:
                raise UserError(f"no checkpoint in {self.out} to resume; start a new run there without --resume")
            saved = checkpoint.load(found)
            was = saved.get("preset")
            if preset is not None and was is not None and preset != was:
                raise UserError(f"--preset {preset} does not match the run being resumed, which was started with "
                                f"--preset {was}; drop --preset (a resume keeps the run's settings)")
            preset = was if was is not None else preset
            cfg = resume_config(saved_config(saved["train_config"]), asdict(cfg))
        cfg.validate()
        self.cfg, self.preset = cfg, preset
        if cfg.deterministic:
            prepare_determinism()  # before dist.init, which may start CUDA
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
            model_cfg = get_config(cfg.model, **cfg.model_overrides())
        except ValueError as e:
            raise UserError(str(e)) from None
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
        self.saved_step = None  # the step of the newest checkpoint this process wrote or resumed from
        self.hellaswag_examples = None
        if saved is not None:
            self._resume(saved)
            del saved
        elif self.info.is_master:
            self.out.mkdir(parents=True, exist_ok=True)
            refuse_existing_run(self.out, str(self.out))
            (self.out / LOG).write_text("")
        if self.info.is_master:
            run_info = {"preset": preset, "config": asdict(cfg), "knobs": asdict(knobs),
                        "world_size": self.info.world_size, "grad_accum": self.grad_accum,
                        "device": str(self.info.device), "params": self.built.raw.num_params(),
                        "decay": str(self.built.decay_report)}
            atomic.write_text(self.out / "run.json", json.dumps(run_info, indent=1) + "\n")
            if self.echo:
                print(f"{cfg.model}: {run_info['params']:,} parameters on {self.info.device} x{self.info.world_size}, "
                      f"recipe {cfg.recipe}, rung {cfg.rung} ({knobs.describe()}){', deterministic' if cfg.deterministic else ''}\n"
                      f"{run_info['decay']}\n"
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
            "preset": self.preset,
        }

    def resume_command(self) -> str:
        """The command that continues this run (its settings come from the checkpoint)."""
        args = f"-m gpt2lab train --out-dir {shlex.quote(str(self.out))} --resume"
        if not self.info.ddp:
            return f"{python_command()} {args}"  # the interpreter that ran this one: .venv/bin/python if not activated
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size))
        if per_node == self.info.world_size:
            return f"torchrun --standalone --nproc_per_node={per_node} {args}"
        return f"the same torchrun command with {args}"

    def _kept(self) -> str:
        saved = checkpoint.latest(self.out)
        return f"the last good checkpoint is {saved}" if saved else "no checkpoint was written yet"

    def save(self) -> None:
        """Write the checkpoint of the current step (rank 0) and make sure every rank knows it worked:
        the all-reduce doubles as a barrier, so no rank exits (and has torchrun kill the others) mid-write.
        Weights that are not finite are never saved (every rank holds the same weights, so all refuse)."""
        finite = torch.stack([torch.isfinite(p).all() for p in self.built.raw.parameters()]).all().item()
        if not finite:
            raise TrainingDiverged(f"the weights hold NaN or infinite values at step {self.step}; no checkpoint "
                                   f"written; stopped, {self._kept()}")
        failure = ""
        if self.info.is_master:
            try:
                checkpoint.save(self.state(), self.out, keep=self.cfg.keep_checkpoints)
            except OSError as e:  # disk full, quota, permissions: the previous checkpoint is untouched
                failure = f"could not write the checkpoint of step {self.step} in {self.out}: {e.strerror or e}"
        if dist.max_over_ranks(int(bool(failure)), self.info):
            previous = checkpoint.latest(self.out)
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise RunStopped(f"{failure or 'rank 0 could not write the checkpoint of step ' + str(self.step)}; "
                             f"{kept}; make room, then resume with: {self.resume_command()}")
        self.saved_step = self.step

    def _resume(self, state: dict) -> None:
        # the weights' shapes must match; attention and loss implementations are knobs, free to differ
        shape = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")
        saved = {k: v for k, v in state["model_config"].items() if k in shape}
        now = {k: v for k, v in asdict(self.built.raw.config).items() if k in shape}
        if saved != now:
            was, this = _shape_difference(saved, now)
            raise UserError(f"the checkpoint in {self.out} holds a model with {was}; --model {self.cfg.model} "
                            f"now builds {this}")
        self.built.raw.load_state_dict(state["model"])
        self.built.optimizer.load_state_dict(state["optimizer"])
        self.train_loader.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        self.step = self.saved_step = state["step"]
        if self.info.is_master:  # drop log lines of steps after the checkpoint: they will be redone
            lines, torn = log_lines(self.out / LOG)
            if torn:
                print(f"gpt2lab: dropped the torn last line of {self.out / LOG} ({len(torn)} bytes, cut short when it "
                      "was written, e.g. by a full disk)", file=sys.stderr, flush=True)
            kept = [ln for ln in lines if json.loads(ln)["step"] < self.step]
            atomic.write_text(self.out / LOG, "".join(ln + "\n" for ln in kept))

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
        from gpt2lab.run import hellaswag

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
        """Train from the current step to max_steps (or stop_after steps); returns a summary. A stop request
        (SIGTERM, Ctrl-C, a data error) ends the run between two steps with a checkpoint: RunStopped."""
        from tqdm.auto import tqdm

        end = self.cfg.max_steps if self.cfg.stop_after is None else min(self.cfg.max_steps, self.step + self.cfg.stop_after)
        if self.step >= end:
            done = read_log(self.out) if self.info.is_master else []
            return {"step": self.step, "train_loss": done[-1]["loss"] if done else float("nan"),
                    "out_dir": str(self.out), "finished_before": True}
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, unit="step", disable=not self.progress, desc="train")
        last_loss = float("nan")
        with matmul_precision(self.knobs), deterministic_algorithms(self.cfg.deterministic), stop.StopRequest() as request:
            try:
                while self.step < end:
                    self._evaluate()
                    position = self.train_loader.state_dict()
                    batches = self._read_batches(request)
                    why = request.agreed(self.info)  # the same answer on every rank
                    if why != stop.NONE:
                        bar.close()
                        self.train_loader.load_state_dict(position)  # this step's batches are read again on resume
                        self._stop(why, request.detail)
                    last_loss = self._train(batches)
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.3f}")
                    if (self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0) \
                            or self.step in (end, self.cfg.max_steps):
                        self.save()
            finally:
                bar.close()
        return {"step": self.step, "train_loss": last_loss, "out_dir": str(self.out)}

    def _evaluate(self) -> None:
        """The evaluations due at this step (before its training step, as in the video's script)."""
        if self.built.raw.config.dropout == 0:  # eval mode changes nothing else in GPT, and would make a compiled
            return self._evaluations()          # model compile a second graph
        self.built.model.eval()  # no dropout while measuring or sampling
        try:
            self._evaluations()
        finally:
            self.built.model.train()

    def _evaluations(self) -> None:
        cfg = self.cfg
        last = self.step == cfg.max_steps - 1
        if self._due(cfg.val_every, last):
            v = self.val_loss()
            self.log({"type": "val", "step": self.step, "val_loss": v}, f"step {self.step:5d} | val loss {v:.4f}")
        if self._due(cfg.hellaswag_every, last):
            h = self.hellaswag()
            self.log({"type": "hellaswag", "step": self.step, **h},
                     f"step {self.step:5d} | hellaswag acc_norm "
                     f"{format_accuracy(h['correct_norm'], h['n'], chance=0.25)} (95% interval)")
        if self.info.is_master and self.step > 0 and self._due(cfg.sample_every, last):
            texts = self.samples()
            self.log({"type": "sample", "step": self.step, "text": texts}, "\n".join(f"sample: {t!r}" for t in texts))

    def _read_batches(self, request: stop.StopRequest) -> list | None:
        """This step's micro-batches, read before any compute: a shard that turns out missing or corrupt
        then stops the run between two steps."""
        try:
            return [self.train_loader.next_batch() for _ in range(self.grad_accum)]
        except (UserError, OSError) as e:
            request.request(stop.DATA_ERROR, str(e))
            return None

    def _stop(self, why: int, detail: str) -> None:
        """Save the checkpoint of this step (unless it was just saved) and raise RunStopped saying how to resume."""
        if self.echo:
            print(f"{stop.WHY[why]} at step {self.step}: saving a checkpoint before stopping", flush=True)
        if self.saved_step != self.step:
            self.save()
        cause = f"stopped by {stop.WHY[why]} at step {self.step}"
        if why == stop.DATA_ERROR:
            cause += f" ({detail or 'on another rank'})"
        fix = "fix the data (`python -m gpt2lab verify DIR` names every bad shard), then " if why == stop.DATA_ERROR else ""
        raise RunStopped(f"{cause}; checkpoint {checkpoint.step_path(self.out, self.step)}; "
                         f"{fix}resume with: {self.resume_command()}", exit_code=stop.EXIT_CODE[why])

    def _train(self, batches: list) -> float:
        """One optimizer step on this step's micro-batches, and its log line."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = lr_at(self.step, self.optim)
        queue = iter(batches)

        def next_batch():
            x, y = next(queue)
            return x.to(self.info.device, non_blocking=True), y.to(self.info.device, non_blocking=True)

        result = train_step(self.built, next_batch, self.grad_accum, lr=lr, grad_clip=cfg.grad_clip,
                            skip_nonfinite=True)
        loss = dist.mean(result.loss, self.info).item()  # .item() waits for the device
        norm = result.grad_norm.item()
        dt = time.perf_counter() - t0
        if not math.isfinite(loss) or result.skipped:  # the weights are still those before this step
            what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm} (loss {loss:.4f})"
            raise TrainingDiverged(f"{what} at step {self.step}; the update was skipped; stopped, {self._kept()}")
        tok_s = cfg.total_batch / dt
        record = {"type": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                  "ms": dt * 1000, "tokens_per_s": tok_s}
        line = f"step {self.step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | {dt * 1000:.1f} ms | {tok_s:,.0f} tok/s"
        self.log(record, line if self.step % cfg.log_every == 0 else None)
        self.step += 1
        return loss


def train(cfg: TrainConfig, out_dir, resume: bool = False, progress: bool = True, echo: bool = True,
          preset: str | None = None) -> dict:
    """Run (or continue) a training run; returns a summary. The Python face of `gpt2lab train`.
    With resume=True the run continues with its saved settings; `cfg` may differ from them only in
    config.MAY_CHANGE_ON_RESUME (evaluation, logging and checkpoint cadence, stop_after)."""
    with locked(out_dir):
        return Trainer(cfg, out_dir, resume=resume, progress=progress, echo=echo, preset=preset).fit()


@contextmanager
def locked(out_dir, create: bool = True):
    """The run folder is this run's while the block runs: a second `train` into it (new or --resume) is
    refused with the pid of this one. Only rank 0 holds the lock (every rank writes into one folder).
    create=False: only a folder that has a lock file is locked (a check before the run that writes nothing)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with lock.held(out_dir, what="a training run", create=create):
        yield


def refuse_existing_run(out: Path, name: str) -> None:
    """A new run starts only in a folder with no checkpoint and no logged step of an earlier run."""
    if checkpoint.saved_steps(out) or (out / checkpoint.POINTER).exists() or (out / checkpoint.LEGACY).exists():
        held = "checkpoints"
    elif (out / LOG).is_file() and (out / LOG).stat().st_size > 0:
        held = f"the {LOG} of a run that wrote no checkpoint yet"
    else:
        return
    raise UserError(f"{name} already holds a run ({held}); pass --resume to continue it, or pick another --out-dir")


def read_log(out_dir, kind: str = "train") -> list[dict]:
    lines, _ = log_lines(Path(out_dir) / LOG)
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def log_lines(path: Path) -> tuple[list[str], bytes]:
    """The whole JSON lines of a run's log, and the torn last line (b"" if none) that a write cut short (a full
    disk, a crash) left: only the last line can be torn, since the log is only ever appended to. A bad line
    before the last is damage, not a torn write: UserError."""
    data = path.read_bytes() if path.is_file() else b""
    pieces = [p for p in data.split(b"\n") if p.strip()]
    lines = []
    for i, piece in enumerate(pieces):
        try:
            line = piece.decode()
            json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            if i == len(pieces) - 1:
                return lines, piece
            raise UserError(f"{path}, line {i + 1}, is not a JSON record (the log was damaged); fix or remove that "
                            "line, then resume") from None
        lines.append(line)
    return lines, b""


# ---- command line ------------------------------------------------------------------------------------
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
            hellaswag.data_path(cfg.hellaswag_data)  # downloaded now (once) if needed, not at step 0 of the run
        except (OSError, ValueError) as e:
            raise UserError(f"--hellaswag-every {cfg.hellaswag_every} needs the HellaSwag data: {e}; "
                            "--hellaswag-every 0 trains without it") from None


def _checkpoint_to_resume(out: Path) -> Path:
    """The newest checkpoint in `out`, checked to be a torch.save file (cheap; the full load comes later)."""
    found = checkpoint.latest(out) if out.is_dir() else None
    if found is None:
        raise UserError(f"--resume: --out-dir {out} holds no checkpoint to continue; start a new run there "
                        "without --resume")
    if not zipfile.is_zipfile(found):
        raise UserError(f"--resume: {found} is not a checkpoint (not a file written by torch.save)")
    return found


def run(args: argparse.Namespace) -> int:
    out = Path(args.out_dir or os.path.join("runs", args.preset or DEFAULT_PRESET))
    output_folder(out, "--out-dir")
    with locked(out, create=False):  # a live run there is refused before anything reads the folder
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    if args.resume:  # the run's saved settings plus the flags given now (refused if they change the computation)
        found = _checkpoint_to_resume(out)
        overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
        cfg = resume_config(saved_config(checkpoint.peek(found)["train_config"]), overrides)
    else:
        cfg = config_from_args(args)
    check_inputs(cfg, args, out)
    try:
        summary = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                        preset=args.preset if args.resume else args.preset or DEFAULT_PRESET)
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
