"""The project's set-up files agree with each other."""

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def _spec(req: str) -> str:
    return req.replace(" ", "").lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [r for r in pip if not r.startswith("-e")]
    assert {_name(r) for r in listed} == {_name(r) for r in wanted}
    # same version bounds, except torch, which the env pins like the Makefile does
    pinned = {_name(r): _spec(r) for r in listed}
    for req in wanted:
        if _name(req) != "torch":
            assert pinned[_name(req)] == _spec(req), req
    make = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH\s*\?=\s*(\S+)", make, re.M).group(1)
    assert pinned["torch"] == torch_pin


def test_package_data_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["gpt2lab"]
    assets = [p.relative_to(ROOT / "gpt2lab") for p in (ROOT / "gpt2lab" / "assets").rglob("*") if p.is_file()]
    assert assets
    for asset in assets:
        assert any(asset.match(g) for g in globs), asset


def test_make_help_lists_the_two_commands():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "make book" in out and "make test" in out


def test_ci_runs_make_test_only():
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-1] == "make test"
