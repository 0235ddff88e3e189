"""Distributed data parallel, set up from torchrun's environment variables.

`torchrun --nproc_per_node=8 -m gpt2lab train ...` sets RANK, LOCAL_RANK and WORLD_SIZE for each process;
a plain `python -m gpt2lab train` has none of them and runs as a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def pick_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def device_problem(name: str) -> str | None:
    """Why the device `name` cannot be used on this machine, or None: checked before a command starts, because
    torch's own complaint comes late and as a traceback ("Torch not compiled with CUDA enabled")."""
    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        hint = " (an NVIDIA or AMD GPU is cuda)" if name.lower() in ("gpu", "nvidia", "rocm") else ""
        return f"unknown device; use {DEVICE_CHOICES}{hint}"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None and torch.version.hip is None else \
                "no GPU or driver found"
            return f"there is no CUDA device here (torch {torch.__version__}: {build})"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from cuda:0"
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return "MPS (the Apple-silicon GPU) is not available here"
    elif dev.type != "cpu":
        return f"gpt2lab runs on cpu, cuda or mps, not {dev.type}"
    return None


def init(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun: nccl on CUDA (one GPU per process), gloo on CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(device=pick_device(device))
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, local_rank, world, dev)


def mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The average of `t` over all ranks (gloo has no AVG, so sum and divide)."""
    if not info.ddp:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def max_over_ranks(value: int, info: DistInfo) -> int:
    """The largest of `value` over all ranks: how the ranks agree on "does any of us want to stop?"."""
    if not info.ddp:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(argv: list[str], nproc: int, extra: tuple[str, ...] = (), timeout: float | None = None):
    """Run `python -m gpt2lab ARGV` under torchrun with `nproc` processes on this machine; returns the
    completed process (stdout and stderr together). What the book uses to show DDP on one machine."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra,
           "-m", "gpt2lab", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
