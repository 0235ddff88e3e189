"""`gpt2lab train`, composed in one place: a run's settings resolved once, its pieces built, the loop started.

`plan` resolves what a run will do: a new run's settings, or (with resume) the saved run's own settings with the
changes a resume may make (config.MAY_CHANGE_ON_RESUME). `start` builds each piece from that plan (devices and
ranks, the speed knobs, data loaders, the model and its optimizer, the run folder) and hands them to the loop
(gpt2lab.run.loop.Trainer), which only trains. `train` is the Python face of the command: both, under the run
folder's lock. The command line itself is gpt2lab.cli.train.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from gpt2lab.base import dist
from gpt2lab.base.errors import UserError
from gpt2lab.engine.corpus import CORPORA
from gpt2lab.engine.data import ShardLoader
from gpt2lab.engine.knobs import Knobs, build, get_rung, keep_freed_memory, resolve_rung, unsupported_reason
from gpt2lab.engine.model import GPTConfig, get_config
from gpt2lab.run import checkpoint
from gpt2lab.run.config import TrainConfig, resume_config, saved_config
from gpt2lab.run.folder import LOG, RunFolder, locked, read_log, restartable_info  # noqa: F401  (the chapters read logs from here)
from gpt2lab.run.loop import Trainer, prepare_determinism

DEFAULT_PRESET = "gpt2-124m-fineweb10b"


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, resolved once: its folder, settings, preset, and the checkpoint it continues (if any)."""
    out: Path
    cfg: TrainConfig
    preset: str | None
    resume_from: Path | None = None
    restart: bool = False  # a --resume with no checkpoint yet: step 0 again, replacing the earlier log


def plan(out: str | os.PathLike, cfg: TrainConfig | None = None, resume: bool = False, preset: str | None = None,
         overrides: dict | None = None) -> RunPlan:
    """A new run's plan (`cfg` as given, checked), or with resume the saved run's settings plus `overrides`
    (default: every field of `cfg`), refused where they would change the computation."""
    out = Path(out)
    if not resume:
        cfg.validate()
        return RunPlan(out, cfg, preset)
    found = checkpoint.latest(out) if out.is_dir() else None
    if found is not None:
        saved = checkpoint.peek(found)
        fields, was = saved["train_config"], saved.get("preset")
    else:  # stopped before its first checkpoint (kill -9, a power cut): step 0 again with its run.json's settings
        info = restartable_info(out)
        if info is None:
            raise UserError(f"no checkpoint in {out} to resume; start a new run there without --resume")
        fields, was = info["config"], info.get("preset")
    if preset is not None and was is not None and preset != was:
        raise UserError(f"--preset {preset} does not match the run being resumed, which was started with "
                        f"--preset {was}; drop --preset (a resume keeps the run's settings)")
    changes = overrides if overrides is not None else (asdict(cfg) if cfg is not None else {})
    cfg = resume_config(saved_config(fields), changes)
    cfg.validate()
    if found is None and int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
        print(f"gpt2lab: {out} holds no checkpoint yet (the run stopped before its first one); it starts again "
              "from step 0 with the settings in its run.json", file=sys.stderr, flush=True)
    return RunPlan(out, cfg, was if was is not None else preset, found, restart=found is None)


def run_knobs(cfg: TrainConfig, device: torch.device) -> Knobs:
    """The rung's speed knobs on this device, with the run's --compile / --autocast, or one line why not."""
    try:
        knobs = get_rung(resolve_rung(cfg.rung, device)).knobs
    except ValueError as e:
        raise UserError(str(e)) from None
    knobs = replace(knobs, **{k: v for k, v in (("compile", cfg.compile), ("autocast", cfg.autocast)) if v is not None})
    reason = unsupported_reason(knobs, device)
    if reason:
        raise UserError(f"rung {cfg.rung!r} cannot run on {device}: {reason}; "
                        "override with --compile false / --autocast none, or pick another --rung")
    return knobs


def model_config(cfg: TrainConfig) -> GPTConfig:
    try:
        return get_config(cfg.model, **cfg.model_overrides())
    except ValueError as e:
        raise UserError(str(e)) from None


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


def loaders(cfg: TrainConfig, info: dist.DistInfo) -> tuple[ShardLoader, ShardLoader]:
    """This rank's train and validation loaders."""
    data_dir = resolve_data(cfg, info)
    return tuple(ShardLoader(data_dir, split, cfg.batch_size, cfg.seq_len, info.rank, info.world_size, seed=cfg.seed)
                 for split in ("train", "val"))


def start(p: RunPlan, progress: bool = True, echo: bool = True) -> Trainer:
    """Build every piece of the planned run and a Trainer on them, at the step the run continues from."""
    cfg = p.cfg
    if cfg.deterministic:
        prepare_determinism()  # before dist.init, which may start CUDA
    info = dist.init(cfg.device)
    knobs, model_cfg = run_knobs(cfg, info.device), model_config(cfg)
    data = loaders(cfg, info)
    if info.device.type == "cpu":
        keep_freed_memory()
    built = build(knobs, model_cfg, info.device, cfg.optim(), ddp_local_rank=info.local_rank if info.ddp else None,
                  seed=cfg.seed)
    folder = RunFolder(p.out, info, echo)
    trainer = Trainer(cfg, info, knobs, built, data, folder, preset=p.preset, progress=progress)
    if p.resume_from is not None:
        trainer.restore(checkpoint.load(p.resume_from))
    else:
        folder.start_new(replace_log=p.restart)
    run_info = {"preset": p.preset, "config": asdict(cfg), "knobs": asdict(knobs), "world_size": info.world_size,
                "grad_accum": trainer.grad_accum, "device": str(info.device), "params": built.raw.num_params(),
                "decay": str(built.decay_report)}
    folder.write_info(run_info)
    if folder.echo:
        print(f"{cfg.model}: {run_info['params']:,} parameters on {info.device} x{info.world_size}, "
              f"recipe {cfg.recipe}, rung {cfg.rung} ({knobs.describe()}){', deterministic' if cfg.deterministic else ''}\n"
              f"{run_info['decay']}\n"
              f"{cfg.total_batch:,} tokens/step = {cfg.batch_size} x {cfg.seq_len} x {info.world_size} "
              f"process(es) x {trainer.grad_accum} micro-steps; "
              f"{'resuming at step ' + str(trainer.step) if p.resume_from else 'new run'} in {p.out}")
    return trainer


def run_plan(p: RunPlan, progress: bool = True, echo: bool = True) -> dict:
    """Train the planned run to its end (or stop_after); returns a summary. The run folder is locked throughout."""
    with locked(p.out):
        return start(p, progress, echo).fit()


def train(cfg: TrainConfig, out_dir, resume: bool = False, progress: bool = True, echo: bool = True,
          preset: str | None = None) -> dict:
    """Run (or continue) a training run; returns a summary. The Python face of `gpt2lab train`.
    With resume=True the run continues with its saved settings; `cfg` may differ from them only in
    config.MAY_CHANGE_ON_RESUME (evaluation, logging and checkpoint cadence, stop_after)."""
    with locked(out_dir):
        return start(plan(out_dir, cfg, resume, preset), progress, echo).fit()
