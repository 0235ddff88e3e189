"""Run the book's chapters as plain Python scripts: `python -m gpt2lab.cli.chapters --scale gpu`.

A GPU machine often has torch but neither Jupyter nor `datasets`. This reads each MyST notebook's code cells
(no jupytext needed), runs them as one script in a fresh process at the chosen scale, and reports per
chapter: passed, failed (with the failing line, e.g. the assert), or skipped with the reason (a module the
chapter needs is not installed). `make gpu-check` calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
# Modules a chapter may need that a GPU image commonly lacks: missing ones skip the chapter, with the reason.
OPTIONAL = {"datasets", "jupyter", "nbformat", "IPython", "transformers", "jupytext"}


def code_cells(markdown: str) -> list[str]:
    """The code of each `{code-cell}` block, cell options (`:tags:` lines, a `---` block) removed."""
    cells = []
    for body in CELL.findall(markdown):
        lines = body.splitlines()
        if lines and lines[0].strip() == "---":  # a YAML options block
            end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---"), 0)
            lines = lines[end + 1:]
        lines = [ln for ln in lines if not re.match(r"^:\w+:", ln)]
        cells.append("\n".join(lines))
    return cells


def to_script(markdown: str, name: str = "chapter") -> str:
    """One script from a chapter's cells, each marked with its number so a traceback names the cell."""
    parts = [f"# {name}, converted by gpt2lab.cli.chapters", "import matplotlib", "matplotlib.use('Agg')"]
    for i, cell in enumerate(code_cells(markdown), 1):
        parts += [f"# ---- cell {i}", cell]
    return "\n".join(parts) + "\n"


@dataclass
class ChapterRun:
    chapter: str
    status: str  # passed | failed | skipped
    detail: str  # the failing line, or the skip reason
    seconds: float
    log: str  # path of the full output


def _failure_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^\w+(\.\w+)*(Error|Exception|Exit|Interrupt)\b", ln) or ln.startswith("AssertionError"):
            return ln.strip()
    return lines[-1].strip() if lines else "no output"


def run_chapter(path: Path, scale: str, out_dir: Path, python: str = sys.executable, timeout: float = 3600) -> ChapterRun:
    script = out_dir / f"{path.stem}.py"
    log = out_dir / f"{path.stem}.log"
    script.write_text(to_script(path.read_text(encoding="utf-8"), path.stem), encoding="utf-8")
    env = {**os.environ, "GPT2LAB_SCALE": scale, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([python, str(script)], cwd=path.parent, env=env, capture_output=True, text=True,
                              timeout=timeout)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, rc = f"{e.stdout or ''}{e.stderr or ''}\nTimeoutError: no result after {timeout:.0f} s", -1
    seconds = time.perf_counter() - t0
    log.write_text(output, encoding="utf-8")
    if rc == 0:
        return ChapterRun(path.stem, "passed", "", seconds, str(log))
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", output)
    if missing and missing.group(1).split(".")[0] in OPTIONAL:
        return ChapterRun(path.stem, "skipped", f"needs `{missing.group(1)}`, not installed here", seconds, str(log))
    return ChapterRun(path.stem, "failed", _failure_line(output), seconds, str(log))


def prepare_cache() -> list[Path]:
    """Shards of every packaged corpus at every shard size a preset uses, in GPT2LAB_CACHE: prepared here
    (where `datasets` is installed) and carried to a GPU machine that lacks it."""
    from gpt2lab.run.config import PRESETS
    from gpt2lab.engine.corpus import CORPORA
    from gpt2lab.engine.prepare import corpus_shards

    pairs = sorted({(c.data, c.shard_size) for c in PRESETS.values() if c.data in CORPORA})
    return [corpus_shards(name, size) for name, size in pairs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpt2lab.cli.chapters", description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="*", help="chapter files (default: notebooks/[0-9]*.md)")
    p.add_argument("--scale", default="gpu", choices=["gpu", "cpu", "smoke"], help="GPT2LAB_SCALE for every chapter")
    p.add_argument("--out", default="build/gpu-check", help="folder for the scripts, logs and summary.json")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per chapter")
    p.add_argument("--prepare-cache", action="store_true",
                   help="only prepare the packaged corpora's shards in GPT2LAB_CACHE (for a machine without datasets)")
    args = p.parse_args(argv)
    if args.prepare_cache:
        for folder in prepare_cache():
            print(f"prepared {folder}")
        return 0
    paths = [Path(c) for c in args.chapters] or sorted(Path("notebooks").glob("[0-9]*.md"))
    missing = [str(c) for c in paths if not c.is_file()]
    if missing or not paths:
        print(f"gpt2lab chapters: error: no such chapter: {', '.join(missing) or 'notebooks/[0-9]*.md'}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        r = run_chapter(path.resolve(), args.scale, out.resolve(), timeout=args.timeout)
        results.append(r)
        print(f"{r.chapter:<34} {r.status:<8} {r.seconds:7.1f} s  {r.detail}", flush=True)
    (out / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "failed", "skipped")}
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped (scale {args.scale}); "
          f"logs in {out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
