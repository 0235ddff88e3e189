"""The package's layers, as the folders show them: a module imports only from its own layer or the ones below,
and no import (at the top or inside a function) runs in a circle.

    cli       the command line and the chapters-as-scripts runner
    lessons   what the chapters teach: number formats, precision, fusion, attention, roofline, probes, ...
    run       a training job: config, trainer, checkpoints, stops; sampling and HellaSwag on its checkpoints
    measure   timing the ladder: FLOPs, memory, results files, tables and plots of them
    engine    GPT-2 itself: tokenizer, data, model, losses, optimizer, the speed knobs, the training step
    base      generic pieces with no GPT-2 in them: errors, atomic writes, downloads, devices, timers, tables

`run` and `measure` stand side by side on `engine`: neither imports the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpt2lab"
LAYERS = {"base": 0, "engine": 1, "run": 2, "measure": 2, "lessons": 3, "cli": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """gpt2lab modules that `path` imports anywhere in its body (lazy imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gpt2lab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpt2lab"):
            for a in node.names:  # `from gpt2lab.base import dist` imports the module gpt2lab.base.dist
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {d for d in imports_of(p, set(mods)) if d in mods and d != m} for m, p in mods.items()}


def test_every_module_sits_in_a_layer():
    loose = [m for m in modules() if layer(m) is None and m not in ("gpt2lab", "gpt2lab.__main__")]
    assert not loose, f"modules outside the layer folders {sorted(LAYERS)}: {loose}"


def test_no_import_runs_upward_or_sideways():
    wrong = []
    for mod, deps in graph().items():
        here = layer(mod)
        for dep in deps:
            there = layer(dep)
            if here is None or there is None:
                continue
            if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] and there != here):
                wrong.append(f"{mod} ({here}) imports {dep} ({there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    deps = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(deps[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("source", ["from gpt2lab.run import checkpoint\n", "import gpt2lab.run.checkpoint\n"])
def test_the_checker_sees_an_upward_import(tmp_path, source):
    """The rule above is only as good as its import reader: a base module importing a run module is caught."""
    fake = tmp_path / "gpt2lab" / "base"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    " + source)
    found = imports_of(fake / "bad.py", {"gpt2lab.run.checkpoint"})
    assert found == {"gpt2lab.run.checkpoint"}
    assert LAYERS[layer("gpt2lab.run.checkpoint")] > LAYERS["base"]
