"""The training loop: one run's steps, evaluations, checkpoints and stops, given pieces built elsewhere.

One optimizer step = `gpt2lab.engine.step.train_step` (shared with the benchmark) over grad_accum micro-batches.
Around it: the learning-rate schedule, validation loss, HellaSwag, samples, the run folder's log, step-numbered
checkpoints, and stops at a step boundary (SIGTERM, Ctrl-C, a bad shard) that save a checkpoint first. What the
loop runs on (settings, model, data, folder) is put together in one place, gpt2lab.run.train; the loop only loops.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict

import torch

from gpt2lab.base import dist
from gpt2lab.base.errors import RunStopped, TrainingDiverged, UserError
from gpt2lab.base.stats import format_accuracy
from gpt2lab.engine.data import ShardLoader
from gpt2lab.engine.knobs import Built, Knobs, matmul_precision
from gpt2lab.engine.optim import lr_at
from gpt2lab.engine.step import train_step
from gpt2lab.engine.tokenizer import VOCAB_SIZE, decode, encode
from gpt2lab.run import checkpoint, stop
from gpt2lab.run.config import TrainConfig
from gpt2lab.run.folder import RunFolder, read_log

CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


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
    """Train from the current step; every piece comes in built (gpt2lab.run.train.start puts them together)."""

    def __init__(self, cfg: TrainConfig, info: dist.DistInfo, knobs: Knobs, built: Built,
                 loaders: tuple[ShardLoader, ShardLoader], folder: RunFolder, preset: str | None = None,
                 progress: bool = True):
        self.cfg, self.info, self.knobs, self.built, self.folder, self.preset = cfg, info, knobs, built, folder, preset
        self.train_loader, self.val_loader = loaders
        self.out = folder.path
        self.optim = cfg.optim()
        self.grad_accum = cfg.grad_accum(info.world_size)
        self.echo, self.progress = folder.echo, progress and info.is_master
        self.step = 0
        self.saved_step = None  # the step of the newest checkpoint this process wrote or resumed from
        self.hellaswag_examples = None

    # ---- bookkeeping -------------------------------------------------------------------------------
    def log(self, record: dict, line: str | None = None) -> None:
        self.folder.log(record, line)

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
        return self.folder.resume_command()

    def _kept(self) -> str:
        return self.folder.last_good()

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

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's state: weights, optimizer, data position, random generators, step."""
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
        self.folder.keep_log_before(self.step)

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
