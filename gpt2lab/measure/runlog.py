"""A training run's curves, read back from the text `gpt2lab train` prints (as committed under `results/`).

The trainer echoes one line per logged step (`step    10 | loss 7.202377 | lr ... | norm ...`), per validation
(`step    20 | val loss 6.4257`) and per HellaSwag evaluation (`step    20 | hellaswag acc_norm 0.2734 (70/256)`),
after a header that states the tokens per step (`16,384 tokens/step = ...`). A resumed run appends a second
header and continues the step count; `parse_train_text` reads both parts into one set of curves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_STEP = re.compile(r"^step\s+(\d+) \| loss ([0-9.]+) \|")
_VAL = re.compile(r"^step\s+(\d+) \| val loss ([0-9.]+)")
_HELLA = re.compile(r"^step\s+(\d+) \| hellaswag acc_norm ([0-9.]+) \((\d+)/(\d+)\)")
_TOKENS = re.compile(r"^([\d,]+) tokens/step")


@dataclass
class RunCurves:
    tokens_per_step: int
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    hellaswag: list[tuple[int, float, int]] = field(default_factory=list)  # (step, acc_norm, examples)

    def tokens(self, step: int) -> int:
        """Tokens trained on before `step` runs: step x tokens per step."""
        return step * self.tokens_per_step


def parse_train_text(text: str) -> RunCurves:
    """Curves from the trainer's printed log (several runs of one folder, e.g. before and after a resume)."""
    per_step = None
    curves = RunCurves(0)
    for line in text.splitlines():
        line = line.strip()
        if (m := _TOKENS.match(line)) is not None:
            value = int(m.group(1).replace(",", ""))
            if per_step is not None and value != per_step:
                raise ValueError(f"the log changes tokens per step from {per_step} to {value}")
            per_step = value
        elif (m := _STEP.match(line)) is not None:
            curves.train.append((int(m.group(1)), float(m.group(2))))
        elif (m := _VAL.match(line)) is not None:
            curves.val.append((int(m.group(1)), float(m.group(2))))
        elif (m := _HELLA.match(line)) is not None:
            right, n = int(m.group(3)), int(m.group(4))
            if abs(right / n - float(m.group(2))) > 1e-4:
                raise ValueError(f"hellaswag line disagrees with itself: {line!r}")
            curves.hellaswag.append((int(m.group(1)), float(m.group(2)), n))
    if per_step is None:
        raise ValueError("no 'N tokens/step' header: not the output of `gpt2lab train`")
    curves.tokens_per_step = per_step
    return curves


def read_train_text(path: str | Path) -> RunCurves:
    return parse_train_text(Path(path).read_text(encoding="utf-8"))
