"""Nice numbers: why a 50,304-wide output head can beat a 50,257-wide one, and what the 47 extra rows learn.

GPU matmul kernels cut the output into tiles whose sides are powers of two (64, 128, 256). 50,257 is odd, so
the last tile of the head's output is ragged: it is either padded inside the kernel or handled by a slower
boundary path, and some kernels drop to a less efficient tiling for the whole matrix. 50,304 = 393 x 128 tiles
exactly. `head_matmul_sweep` times the head's matmul across nearby widths to see whether this device has that
staircase; `padded_rows_experiment` trains a small model with the padded vocabulary to show that the extra rows,
which never appear as a target, are simply pushed towards zero probability.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gpt2lab.engine.knobs import padded_vocab_size
from gpt2lab.engine.model import GPT, GPTConfig


def power_of_two_factor(n: int, cap: int = 1024) -> int:
    """The largest power of two (up to `cap`) that divides n: 1 for 50,257, 128 for 50,304."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    p = 1
    while p < cap and n % (2 * p) == 0:
        p *= 2
    return p


def fast_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype the head's matmul runs in on the ladder's fast rungs: bf16 where the hardware does bf16
    matmuls natively (recent GPUs, CPUs with AVX-512 BF16 / AMX), else fp16 (older GPUs) or fp32 (other CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    from gpt2lab.base.hardware import cpu_bf16_native

    return torch.bfloat16 if cpu_bf16_native() else torch.float32


# ------------------------------------------------------------------------------------------ the staircase


@dataclass
class HeadTiming:
    """The head's forward matmul, (rows x n_embd) @ (n_embd x vocab), timed at one vocabulary width."""

    vocab: int
    times_ms: list[float]
    flops: int

    @property
    def median_ms(self) -> float:
        import statistics

        return statistics.median(self.times_ms)

    @property
    def tflops(self) -> float:
        return self.flops / (self.median_ms / 1000) / 1e12


def head_matmul_sweep(vocab_sizes: list[int], rows: int, device: torch.device | str, n_embd: int = 768,
                      dtype: torch.dtype | None = None, steps: int = 5, warmup: int = 1,
                      progress: bool = False) -> list[HeadTiming]:
    """Time `F.linear(x, W)` with x (rows x n_embd) and W (vocab x n_embd) for each vocabulary width.

    The widths are timed round-robin (one call of each per round, `steps` rounds), so a burst of load from
    another process hits every width alike instead of one.
    """
    from tqdm.auto import tqdm

    from gpt2lab.base.timing import measure

    if not vocab_sizes or rows < 1 or steps < 1:
        raise ValueError(f"need vocabulary sizes, rows >= 1 and steps >= 1; got {vocab_sizes}, {rows}, {steps}")
    device = torch.device(device)
    dtype = dtype or fast_dtype(device)
    x = torch.randn(rows, n_embd, device=device, dtype=dtype)
    weights = {n: torch.randn(n, n_embd, device=device, dtype=dtype) * 0.02 for n in vocab_sizes}
    times: dict[int, list[float]] = {n: [] for n in vocab_sizes}
    for n, w in weights.items():
        measure(lambda: F.linear(x, w), device, steps=1, warmup=warmup)
    for _ in tqdm(range(steps), desc="head matmul", disable=not progress):
        for n, w in weights.items():
            times[n] += measure(lambda: F.linear(x, w), device, steps=1, warmup=0).times_ms
    return [HeadTiming(n, times[n], 2 * rows * n_embd * n) for n in vocab_sizes]


# ---------------------------------------------------------------------------------------- the padded rows


@dataclass
class PaddedRowsHistory:
    """What a short training run does to three groups of output rows, measured on one fixed batch per step.

    seen: real tokens that occur as targets in the training text; unseen: real tokens that never do;
    padded: the rows added to round the vocabulary up, which no input or target ever uses.
    """

    vocab: int
    padded_vocab: int
    n_seen: int
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    mean_logit: dict[str, list[float]] = field(default_factory=lambda: {"seen": [], "unseen": [], "padded": []})
    probability: dict[str, list[float]] = field(default_factory=lambda: {"seen": [], "unseen": [], "padded": []})


def _row_groups(data: torch.Tensor, vocab: int, padded: int) -> dict[str, torch.Tensor]:
    """The head's rows as three masks: real tokens that are a target somewhere in `data` (seen), real tokens
    that never are (unseen), and the padding rows past `vocab` (padded)."""
    seen = torch.zeros(padded, dtype=torch.bool)
    seen[data[1:].unique()] = True
    groups = {"seen": seen, "unseen": ~seen, "padded": torch.zeros(padded, dtype=torch.bool)}
    groups["unseen"][vocab:] = False
    groups["padded"][vocab:] = True
    return groups


def padded_rows_experiment(tokens: list[int], config: GPTConfig, steps: int, batch: int, seq: int,
                           device: torch.device | str = "cpu", lr: float = 3e-3, seed: int = 0,
                           every: int = 1, progress: bool = False) -> PaddedRowsHistory:
    """Train `config` with its vocabulary padded to a multiple of 128 on random windows of `tokens`.

    No weight decay, so whatever happens to the padded rows comes from the gradient alone: softmax
    cross-entropy lowers the logit of every row that is not the target, in proportion to its probability.
    Every `every` steps, record the mean logit and total probability of each row group on a fixed batch.
    """
    from tqdm.auto import tqdm

    from dataclasses import replace

    device = torch.device(device)
    if len(tokens) < seq + 2:
        raise ValueError(f"need more than {seq + 1} tokens, got {len(tokens)}")
    padded = padded_vocab_size(config.vocab_size)
    torch.manual_seed(seed)
    model = GPT(replace(config, vocab_size=padded)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    data = torch.tensor(tokens, dtype=torch.long)
    groups = {k: g.to(device) for k, g in _row_groups(data, config.vocab_size, padded).items()}

    rng = random.Random(seed)

    def windows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = [rng.randrange(len(tokens) - seq - 1) for _ in range(n)]
        chunk = torch.stack([data[s: s + seq + 1] for s in starts]).to(device)
        return chunk[:, :-1], chunk[:, 1:]

    probe_x, _ = windows(batch)
    history = PaddedRowsHistory(config.vocab_size, padded, int(groups["seen"].sum()))

    def record(step: int, loss: float) -> None:
        model.eval()
        with torch.no_grad():
            logits = model(probe_x)[0].float().reshape(-1, padded)
            probs = logits.softmax(dim=-1)
        model.train()
        history.steps.append(step)
        history.loss.append(loss)
        for name, rows in groups.items():
            history.mean_logit[name].append(logits[:, rows].mean().item())
            history.probability[name].append(probs[:, rows].sum(dim=-1).mean().item())

    x, y = windows(batch)
    with torch.no_grad():
        record(0, model(x, y)[1].item())
    for step in tqdm(range(1, steps + 1), desc="padded vocab", disable=not progress):
        x, y = windows(batch)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps:
            record(step, loss.item())
    return history
