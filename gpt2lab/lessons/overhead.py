"""The other thing torch.compile removes: one dispatched operation per line of Python.

Eagerly, every line of the model is its own trip through the Python interpreter and PyTorch's dispatcher:
`x.view(...)`, `.transpose(...)`, a bias add, a LayerNorm, each one an operation with its own bookkeeping, and the
backward replays the same again. For GPT-2 124M at B=16, T=1024 that bookkeeping is small next to the work of each
operation. For a tiny model at batch 1 each operation does almost no arithmetic, so the bookkeeping is the step.
torch.compile traces the model once into a graph: views and reshapes become index arithmetic inside generated
kernels, element-wise chains become fused kernels, and what is still dispatched as a PyTorch operation is mostly
the matmuls, which inductor hands to the BLAS library. `overhead_experiment` counts the operations one training
step dispatches (the profiler's top-level aten operations) and times the step, eager against compiled.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch

MATMUL_OPS = ("mm", "addmm", "bmm", "matmul", "linear", "baddbmm")
VIEW_OPS = ("view", "reshape", "t", "transpose", "permute", "expand", "split", "unsqueeze", "squeeze", "slice",
            "select", "contiguous", "as_strided", "_unsafe_view", "unbind")


def op_kind(name: str) -> str:
    """"matmul" (incl. attention), "view" (shape bookkeeping, no arithmetic) or "other" for an aten op name."""
    op = name.removeprefix("aten::")
    if op in MATMUL_OPS or "attention" in op:
        return "matmul"
    return "view" if op in VIEW_OPS else "other"


def dispatched_ops(fn) -> Counter:
    """The aten operations one call of `fn` dispatched from Python or the autograd engine (not those an operation
    runs inside itself), by name, from `torch.profiler`."""
    from torch.profiler import ProfilerActivity, profile

    from gpt2lab.base.timing import quiet_stderr

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def top_level(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return Counter(e.name for e in prof.events() if e.name.startswith("aten::") and top_level(e))


@dataclass
class OverheadResult:
    """One way of running the training step: the operations it dispatched, its first call and its step times."""

    name: str
    ops: Counter
    first_s: float
    times_ms: list[float]

    @property
    def n_ops(self) -> int:
        return sum(self.ops.values())

    def by_kind(self) -> dict[str, int]:
        kinds = Counter()
        for name, n in self.ops.items():
            kinds[op_kind(name)] += n
        return {k: kinds.get(k, 0) for k in ("matmul", "view", "other")}

    @property
    def median_ms(self) -> float:
        import statistics

        return statistics.median(self.times_ms)


def overhead_experiment(model_shape: str = "test", batch: int = 1, steps: int = 20,
                        seed: int = 0) -> list[OverheadResult]:
    """Forward, loss and backward of a small GPT at `batch` on the CPU, eagerly and through torch.compile (same
    weights, same batch): the dispatched operations of one step, the first call (compilation) and `steps` timed."""
    from gpt2lab.base.timing import measure
    from gpt2lab.engine.model import GPT, get_config

    torch.manual_seed(seed)
    config = get_config(model_shape)
    model = GPT(config)
    idx, targets = torch.randint(0, config.vocab_size, (2, batch, config.block_size))
    results = []
    for name, runner in (("eager", model), ("torch.compile", torch.compile(model))):
        def step(runner=runner):
            runner(idx, targets)[1].backward()
            model.zero_grad(set_to_none=True)

        t0 = time.perf_counter()
        step()  # compiles, for the compiled runner
        first_s = time.perf_counter() - t0
        m = measure(step, "cpu", steps=steps, warmup=2)
        results.append(OverheadResult(name, dispatched_ops(step), first_s, m.times_ms))
    return results
