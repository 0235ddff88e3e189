"""`make lab`: JupyterLab with jupytext opens every MyST chapter as a notebook.

Starts the server `make lab` starts (the Makefile's LAB_FLAGS) on 127.0.0.1, a free port, with a token;
asks its REST API for every chapter as a notebook, checks the cells that come back against the file,
and stops it. Bounded: the server gets 120 s to answer, the whole test a few minutes at most.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here talks to a JupyterLab server it starts

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.md")) + [ROOT / "book" / "results.md"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _put(url: str, model: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(url, data=json.dumps(model).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = _free_port(), secrets.token_hex(16)
    runtime = tmp_path_factory.mktemp("jupyter-runtime")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    cmd = [sys.executable, "-m", "jupyter", "lab", *LAB_FLAGS, "--no-browser", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []  # as `make lab` does (LAB_AS_ROOT)
    log = (runtime / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}: {(runtime / 'server.log').read_text()[-2000:]}")
            try:
                _get(f"{base}/api/status?token={token}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within 120 s: {(runtime / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def _lab_flags() -> list[str]:
    """The server flags `make lab` uses, read from the Makefile so the test starts the same server."""
    make = (ROOT / "Makefile").read_text()
    found = re.search(r"^LAB_FLAGS\s*:?=\s*(.+)$", make, re.M)
    assert found, "Makefile defines no LAB_FLAGS"
    return found.group(1).split()


LAB_FLAGS = _lab_flags()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_opens_as_a_notebook(lab, chapter):
    base, token = lab
    rel = chapter.relative_to(ROOT).as_posix()
    model = _get(f"{base}/api/contents/{rel}?type=notebook&content=1&token={token}")
    assert model["type"] == "notebook" and model["format"] == "json"
    cells = model["content"]["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    source = chapter.read_text(encoding="utf-8")
    assert len(code) == source.count("```{code-cell}") > 0
    first_code = source.split("```{code-cell} ipython3\n", 1)[1].split("```", 1)[0]
    first_lines = [ln for ln in first_code.splitlines() if not ln.startswith(":")]  # drop cell options
    assert code[0]["source"].strip() == "\n".join(first_lines).strip()
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    # Saving from JupyterLab writes the same MyST Markdown back (into build/, not over the chapter).
    copy = ROOT / "build" / "lab-roundtrip" / chapter.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.unlink(missing_ok=True)
    saved = {"type": "notebook", "format": "json", "content": model["content"]}
    _put(f"{base}/api/contents/{copy.relative_to(ROOT).as_posix()}?token={token}", saved)
    assert copy.read_text(encoding="utf-8") == source


def test_markdown_files_open_as_notebooks_by_default(lab):
    """Double-clicking a chapter in the file browser opens the notebook view, not the text editor."""
    base, token = lab
    plugin = _get(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin?token={token}")
    # the project's overrides.json becomes the setting's default (a user's own choice still wins)
    viewers = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers.get("markdown") == "Jupytext Notebook" and viewers.get("myst") == "Jupytext Notebook"
