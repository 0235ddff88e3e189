"""AdamW as GPT-3 / the video configure it, the warmup + cosine learning-rate schedule, and (the `muon` idea of
gpt2lab.engine.recipes) Muon for the hidden matrices beside AdamW for the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class OptimConfig:
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1  # the schedule decays to 10% of max_lr, as in GPT-3
    warmup_steps: int = 715
    max_steps: int = 19073
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    muon: bool = False  # torch.optim.Muon for the transformer blocks' matrices, AdamW for everything else


    @property
    def min_lr(self) -> float:
        return self.max_lr * self.min_lr_ratio


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Linear warmup to max_lr over warmup_steps, cosine decay to min_lr at max_steps, then constant."""
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.max_lr - cfg.min_lr)


@dataclass(frozen=True)
class DecayReport:
    decay_tensors: int
    decay_params: int
    no_decay_tensors: int
    no_decay_params: int
    fused: bool
    muon_tensors: int = 0  # of the decayed ones, those Muon updates
    muon_params: int = 0

    def __str__(self) -> str:
        muon = f"Muon on {self.muon_tensors} hidden matrices ({self.muon_params:,} params), AdamW on the rest; " \
            if self.muon_tensors else ""
        return muon + (
            f"weight decay on {self.decay_tensors} tensors ({self.decay_params:,} params), "
            f"none on {self.no_decay_tensors} tensors ({self.no_decay_params:,} params); fused AdamW: {self.fused}"
        )


def fused_supported(device_type: str) -> bool:
    """Whether this torch build has a fused AdamW kernel for the device type."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device_type in _get_fused_kernels_supported_devices()
    except ImportError:  # older torch: fused existed for CUDA only
        return device_type == "cuda"


def make_adamw(model: torch.nn.Module, cfg: OptimConfig, fused: bool, device_type: str):
    """AdamW with decay on matrices and embeddings (dim >= 2) only: biases and LayerNorm gains keep their scale.

    Returns (optimizer, DecayReport). `fused` is honoured only where the device has the fused kernel.
    """
    return adamw_for([p for p in model.parameters() if p.requires_grad], cfg, fused, device_type)  # tied head once


def adamw_for(params: list, cfg: OptimConfig, fused: bool, device_type: str):
    """`make_adamw` for a list of parameters."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    use_fused = bool(fused) and fused_supported(device_type)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.max_lr, betas=cfg.betas, eps=cfg.eps, fused=use_fused,
    )
    report = DecayReport(
        len(decay), sum(p.numel() for p in decay), len(no_decay), sum(p.numel() for p in no_decay), use_fused
    )
    return optimizer, report


class MuonAdamW:
    """Two optimizers stepped as one: Muon for the hidden matrices, AdamW for the rest. It shows the face of a
    torch.optim.Optimizer that the training step, the checkpoint and a gradient scaler use: `param_groups` (the
    schedule sets each group's lr), step, zero_grad, state_dict, load_state_dict, register_step_pre_hook."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])

    def register_step_pre_hook(self, hook):
        return self.muon.register_step_pre_hook(hook)  # Muon steps first: its hook runs before either update


def muon_split(model: torch.nn.Module) -> tuple[list, list]:
    """(Muon's, AdamW's) parameters: the 2-D weights inside the transformer blocks are Muon's; the embeddings, the
    head (a lookup table's transpose, whose rows see very different gradients) and every gain and bias AdamW's."""
    muon, rest = [], []
    for name, p in model.named_parameters():  # a tied head appears once, as wte
        if p.requires_grad:
            (muon if p.dim() == 2 and name.startswith("transformer.h.") else rest).append(p)
    return muon, rest


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, fused: bool, device_type: str):
    """`make_adamw`, or with cfg.muon Muon for the hidden matrices and AdamW (as `make_adamw` sets it up) for the
    rest. Muon scales its update to AdamW's typical size (torch's "match_rms_adamw": 0.2 * sqrt(max(rows, cols))
    times the orthogonalised momentum), so one learning rate and one schedule serve both. Returns (optimizer, report)."""
    if not cfg.muon:
        return make_adamw(model, cfg, fused, device_type)
    hidden, rest = muon_split(model)
    muon = torch.optim.Muon(hidden, lr=cfg.max_lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
    adamw, report = adamw_for(rest, cfg, fused, device_type)
    report = replace(report, decay_tensors=report.decay_tensors + len(hidden),
                     decay_params=report.decay_params + sum(p.numel() for p in hidden),
                     muon_tensors=len(hidden), muon_params=sum(p.numel() for p in hidden))
    return MuonAdamW(muon, adamw), report


# ------------------------------------------------------------------------ how the update runs: three ways

# The same AdamW update, implemented three ways by PyTorch. The arithmetic is identical; what differs is
# how many separate operations (on a GPU: kernel launches) one optimizer step issues.
ADAMW_IMPLEMENTATIONS = {
    "for-loop": dict(foreach=False, fused=False),  # ~10 small ops per parameter tensor
    "foreach": dict(foreach=True, fused=False),  # each op applied to a whole list of tensors at once
    "fused": dict(foreach=False, fused=True),  # one kernel does the whole update for every tensor
}


@dataclass
class OptimizerStepCost:
    implementation: str
    ms_median: float
    ms_min: float
    ms_max: float
    operations: int  # top-level operations (CPU) or kernels launched (CUDA) by one step
    counted: str  # what `operations` counts


def count_operations(fn, device: torch.device) -> tuple[int, str]:
    """How many operations one call of `fn` issues: CUDA kernels launched on a GPU, otherwise top-level aten
    operations (each of which is at least one pass over its tensors' memory on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    from gpt2lab.base.timing import quiet_stderr

    with quiet_stderr(), profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        from torch.autograd import DeviceType

        return sum(1 for e in events if e.device_type == DeviceType.CUDA), "CUDA kernels launched"
    top = [e for e in events if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return len(top), "top-level aten operations"


def adamw_step_costs(model: torch.nn.Module, device: torch.device | str, steps: int = 10,
                     warmup: int = 2) -> list[OptimizerStepCost]:
    """Time the optimizer step alone (gradients already in place) for each AdamW implementation this device
    supports, and count the operations one step issues. Weights are restored after each implementation."""
    from gpt2lab.base.timing import measure

    device = torch.device(device)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    generator = torch.Generator(device="cpu").manual_seed(0)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=generator) * 1e-3).to(device)
    costs = []
    for name, options in ADAMW_IMPLEMENTATIONS.items():
        if options["fused"] and not fused_supported(device.type):
            continue
        optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **options)
        m = measure(optimizer.step, device, steps=steps, warmup=warmup)
        ops, counted = count_operations(optimizer.step, device)
        costs.append(OptimizerStepCost(name, m.median_ms, m.min_ms, m.max_ms, ops, counted))
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    for p in params:
        p.grad = None
    return costs
