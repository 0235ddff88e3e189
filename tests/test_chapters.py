"""Chapters as plain scripts (what `make gpu-check` runs on a machine without Jupyter)."""

import json
from pathlib import Path

import pytest

from gpt2lab.cli import chapters

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
---

# A chapter

```{{code-cell}} ipython3
x = 6 * 7
```

Some prose with a fence that is not code:

```python
this is not run
```

```{{code-cell}} ipython3
:tags: [hide-input]
{last}
```
"""


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9]*.md")), ids=lambda p: p.stem)
def test_code_cells_equal_what_jupytext_reads(path):
    import jupytext

    nb = jupytext.read(path)
    expected = [c.source for c in nb.cells if c.cell_type == "code"]
    assert chapters.code_cells(path.read_text()) == expected


def test_to_script_keeps_only_code_cells():
    script = chapters.to_script(CHAPTER.format(last="print(x)"))
    assert "x = 6 * 7" in script and "print(x)" in script
    assert "this is not run" not in script and ":tags:" not in script
    assert script.index("# ---- cell 1") < script.index("# ---- cell 2")


def test_run_reports_passed_failed_and_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(chapters, "OPTIONAL", chapters.OPTIONAL | {"no_such_module_gpt2lab"})
    cases = {
        "01_ok": ("assert x == 42", "passed", ""),
        "02_bad": ('assert x == 41, "the answer moved"', "failed", "AssertionError: the answer moved"),
        "03_needs": ("import no_such_module_gpt2lab", "skipped", "needs `no_such_module_gpt2lab`"),
        "04_bug": ("import no_such_module_at_all", "failed", "ModuleNotFoundError"),
    }
    for name, (last, status, detail) in cases.items():
        path = tmp_path / f"{name}.md"
        path.write_text(CHAPTER.format(last=last))
        r = chapters.run_chapter(path, "smoke", tmp_path, timeout=120)
        assert (r.chapter, r.status) == (name, status), r
        assert detail in r.detail
        assert Path(r.log).exists()


def test_main_summarises_and_exits_nonzero_on_failure(tmp_path, capsys):
    good, bad = tmp_path / "01_good.md", tmp_path / "02_bad.md"
    good.write_text(CHAPTER.format(last="print('scale is', __import__('os').environ['GPT2LAB_SCALE'])"))
    bad.write_text(CHAPTER.format(last="assert False, 'broken'"))
    out = tmp_path / "out"
    assert chapters.main([str(good), str(bad), "--scale", "smoke", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "1 passed, 1 failed, 0 skipped (scale smoke)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["passed", "failed"]
    assert "scale is smoke" in Path(summary[0]["log"]).read_text()
    assert chapters.main([str(tmp_path / "missing.md"), "--out", str(out)]) == 2


def test_prepare_cache_fills_the_shards_every_preset_needs(tmp_path, monkeypatch):
    from gpt2lab.engine import data
    from gpt2lab.run.config import PRESETS

    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    folders = chapters.prepare_cache()
    needed = {(c.data, c.shard_size) for c in PRESETS.values() if c.data == "tinyshakespeare"}
    assert len(folders) == len(needed) >= 1
    assert all(f.is_relative_to(tmp_path) and (f / data.MANIFEST).exists() for f in folders)


# ------------------------------------------------------------------------------------------------------------
# A fresh clone: no network, nothing beside the repository. `make test` builds the whole book at smoke scale
# under tests/offline/sitecustomize.py (every chapter runs once, offline); the tests below check that guard and
# run, at cpu scale, the chapters that would reach the network there.

OFFLINE = ROOT / "tests" / "offline"


def _offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", f"{OFFLINE}:{ROOT}")
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path / "cache"))  # a cold cache: nothing downloaded before
    for name in ("GPT2LAB_HELLASWAG", "GPT2LAB_GPT2_WEIGHTS", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_offline_guard_refuses_other_hosts_and_keeps_loopback(tmp_path, monkeypatch):
    import subprocess
    import sys

    _offline_env(monkeypatch, tmp_path)
    probe = ("import errno, socket\n"
             "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=30)\nexcept OSError as e:\n"
             "    print('refused', e.errno == errno.ENETUNREACH)\n"
             "server = socket.create_server(('127.0.0.1', 0)); socket.create_connection(server.getsockname()).close()\n"
             "print('loopback ok')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.split("\n")[:2] == ["refused True", "loopback ok"], out.stderr


def test_nothing_reads_the_folder_beside_the_clone():
    """../shared exists on the machines that build this project, not on a reader's: only the Makefile (which
    turns it into $GPT2LAB_HELLASWAG for `make book` when present) and the tests' own checks may name it."""
    readers = [*sorted((ROOT / "notebooks").glob("*.md")), *sorted((ROOT / "gpt2lab").rglob("*.py")),
               *sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "book" / "_ext").glob("*.py"))]
    named = [str(p.relative_to(ROOT)) for p in readers if "shared/data" in p.read_text(encoding="utf-8")]
    assert len(readers) > 20 and named == []


@pytest.mark.slow
@pytest.mark.parametrize("chapter", ["12_hellaswag"])
def test_network_chapters_run_offline_at_cpu_scale(chapter, tmp_path, monkeypatch):
    """Chapter 12 downloads HellaSwag at cpu scale when it can: offline it scores the packaged sample and says so."""
    _offline_env(monkeypatch, tmp_path)
    r = chapters.run_chapter(ROOT / "notebooks" / f"{chapter}.md", "cpu", tmp_path, timeout=1200)
    log = Path(r.log).read_text()
    assert r.status == "passed", f"{r.detail}\n{log[-3000:]}"
    assert "40 examples (40-row sample): the full validation file is not here (cannot reach" in log
    assert "random init, measured (40-row sample)" in log
