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


# ------------------------------------------------------------------------------------------------- sizes

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # def line to last line, docstring included
# Known exceptions while other work is in flight; the lead decides at the merge. Each names why.
# engine/prepare.py's `prepare`: one resumable sharding loop, not yet split.
SIZE_EXCEPTIONS: dict[str, set[str]] = {}  # module -> functions allowed over the limit (none now)


def oversized(path: Path, max_module: int = MAX_MODULE_LINES, max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """What in one source file is over the limits: "module" (too many lines) and each too-long function by its
    qualified name (Class.method, outer.inner)."""
    source = path.read_text()
    found = ["module"] if len(source.splitlines()) > max_module else []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > max_function:
                    found.append(name)
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return found


def test_no_module_or_function_is_over_the_size_limits():
    over = {m: set(oversized(p)) for m, p in modules().items()}
    new = {m: sorted(o - SIZE_EXCEPTIONS.get(m, set())) for m, o in over.items() if o - SIZE_EXCEPTIONS.get(m, set())}
    assert not new, (f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function "
                     f"(split them): {new}")
    stale = {m: sorted(e - over.get(m, set())) for m, e in SIZE_EXCEPTIONS.items() if e - over.get(m, set())}
    assert not stale, f"no longer over the limits, drop them from SIZE_EXCEPTIONS: {stale}"


def test_the_size_checker_sees_long_functions_methods_and_modules(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    f = tmp_path / "big.py"
    f.write_text(f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body.replace('    ', '        ')}\n\n\n"
                 f"def outer():\n    def inner():\n{body.replace('    ', '        ')}\n    return inner\n")
    assert oversized(f, max_module=10_000) == ["C.long", "outer", "outer.inner"]
    assert oversized(f, max_module=100)[0] == "module"
    f.write_text("def fits():\n" + "\n".join(f"    x{i} = {i}" for i in range(59)) + "\n")  # 60 lines exactly
    assert oversized(f) == []
