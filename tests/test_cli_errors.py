"""Every command, every foreseeable bad input: exit status 2, one line on stderr naming the flag and the value,
no traceback, nothing written and nothing lost, and no work started.

Each case runs in a fresh folder holding the same small files (an existing file, a folder with a finished
run, a jsonl with a bad row, ...). The whole folder, the cache included, is compared before and after.
Most cases call `gpt2lab.cli.main` in this process (fast); the `slow` ones run `python -m gpt2lab` to
check the real exit status and that nothing else reaches stderr.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from gpt2lab.cli import main as cli
from gpt2lab.run import hellaswag
from gpt2lab.run import train
from gpt2lab.run.hellaswag import sample_path

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the case is a machine without CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="the case is a machine without MPS")
HELLASWAG = str(sample_path())


@dataclass
class Case:
    argv: list[str]
    expect: tuple[str, ...]  # each must appear in the error line: the flag as typed, and the value
    env: dict = field(default_factory=dict)


def case(*argv: str, expect: str | tuple[str, ...], env: dict | None = None, marks=(), id=None):
    expect = (expect,) if isinstance(expect, str) else expect
    return pytest.param(Case(list(argv), expect, env or {}), marks=marks,
                        id=id or " ".join(argv).replace(HELLASWAG, "SAMPLE"))


SMOKE = ("train", "--preset", "smoke", "--out-dir", "run")
CKPT = ("hellaswag", "--checkpoint", "latest.pt", "--data", HELLASWAG)
SHAKESPEARE = ("prepare", "--source", "tinyshakespeare", "--workers", "1")

CASES = [
    # the command line itself
    case(expect=("gpt2lab: error:", "COMMAND"), id="no command"),
    case("fly", expect=("gpt2lab: error:", "fly")),
    case("train", "--maxsteps", "3", expect=("gpt2lab train: error:", "--maxsteps", "did you mean --max-steps")),
    case("train", "--max-steps", expect=("--max-steps", "expected one argument")),
    case("train", "--max-steps", "ten", expect=("--max-steps", "ten")),
    case("train", "--preset", "nope", expect=("--preset", "nope")),
    # train: the device
    case(*SMOKE, "--device", "cuda", expect=("--device cuda", "no CUDA device"), marks=NO_CUDA),
    case(*SMOKE, "--device", "cuda:7", expect="--device cuda:7"),
    case(*SMOKE, "--device", "gpu", expect=("--device gpu", "use auto, cpu, cuda")),
    case(*SMOKE, "--device", "mps", expect=("--device mps", "MPS"), marks=NO_MPS),
    case("train", "--preset", "gpu-tiny-shakespeare", "--out-dir", "run",
         expect=("--preset gpu-tiny-shakespeare", "no CUDA device", "--device cpu"), marks=NO_CUDA),
    # train: values
    case(*SMOKE, "--autocast", "bogus", expect=("--autocast", "bogus")),
    case(*SMOKE, "--rung", "warp", expect=("--rung", "warp")),
    case(*SMOKE, "--recipe", "warp", expect=("--recipe", "warp", "gpt2 or modern", "rope, rmsnorm")),
    case(*SMOKE, "--recipe", "rope,warp", expect=("--recipe", "rope,warp", "a comma list of ideas")),
    case(*SMOKE, "--model", "test", expect=("--model", "test")),
    case(*SMOKE, "--compile", "maybe", expect=("--compile", "maybe")),
    case(*SMOKE, "--max-lr", "nan", expect=("--max-lr", "nan")),
    case(*SMOKE, "--max-lr", "inf", expect=("--max-lr", "inf")),
    case(*SMOKE, "--max-lr", "-1e-3", expect=("--max-lr", "-0.001")),
    case(*SMOKE, "--max-lr", "0", expect=("--max-lr", "0")),
    case(*SMOKE, "--min-lr-ratio", "1.5", expect=("--min-lr-ratio", "1.5")),
    case(*SMOKE, "--dropout", "1", expect=("--dropout", "below 1", "1.0")),
    case(*SMOKE, "--dropout", "-0.1", expect=("--dropout", "-0.1")),
    case(*SMOKE, "--dropout", "nan", expect=("--dropout", "nan")),
    case(*SMOKE, "--weight-decay", "-0.1", expect=("--weight-decay", "-0.1")),
    case(*SMOKE, "--grad-clip", "-inf", expect=("--grad-clip", "-inf")),
    case(*SMOKE, "--max-steps", "0", expect=("--max-steps", "0")),
    case(*SMOKE, "--batch-size", "-4", expect=("--batch-size", "-4")),
    case(*SMOKE, "--warmup-steps", "-1", expect=("--warmup-steps", "-1")),
    case(*SMOKE, "--val-steps", "0", expect=("--val-steps", "0")),
    case(*SMOKE, "--stop-after", "0", expect=("--stop-after", "0")),
    case(*SMOKE, "--hellaswag-limit", "0", expect=("--hellaswag-limit", "0")),
    case(*SMOKE, "--seed", "-1", expect=("--seed", "-1")),
    case(*SMOKE, "--sample-prompt=", expect=("--sample-prompt", "''")),
    case(*SMOKE, "--total-batch", "1000", expect=("--total-batch 1000", "--batch-size", "256")),
    case(*SMOKE, "--seq-len", "4096", expect=("--seq-len", "4096", "128")),
    # train: paths
    case(*SMOKE, "--data", "nowhere", expect=("--data nowhere", "not a prepared shard folder")),
    case(*SMOKE, "--data", "a_file", expect=("--data a_file", "not a prepared shard folder")),
    case("train", expect=("no --preset given", "gpt2-124m-fineweb10b", "no GPU", "--preset cpu-tiny-shakespeare"),
         id="train (no preset, no GPU)", marks=NO_CUDA),
    case("train", "--preset", "gpt2-124m-fineweb10b", "--device", "cpu",
         expect=("--preset gpt2-124m-fineweb10b", "data/edu_fineweb10B", "prepare"), id="train (no data)"),
    case("train", "--preset", "smoke", "--out-dir", "a_file", expect=("--out-dir a_file", "is a file")),
    case("train", "--preset", "smoke", "--out-dir", "a_file/run", expect=("--out-dir a_file/run", "is a file")),
    case("train", "--preset", "smoke", "--out-dir", "old_run", expect=("--out-dir old_run", "--resume")),
    case("train", "--preset", "smoke", "--out-dir", "empty_dir", "--resume", expect=("--resume", "empty_dir")),
    case("train", "--preset", "smoke", "--out-dir", "old_run", "--resume", expect=("--resume", "old_run/latest.pt")),
    case(*SMOKE, "--hellaswag-every", "4", "--hellaswag-data", "nowhere.jsonl",
         expect=("--hellaswag-data", "nowhere.jsonl")),
    # prepare
    case("prepare", "--out", "shards", expect=("--source HuggingFaceFW/fineweb-edu", "HF_HUB_OFFLINE", "--source"),
         env={"HF_HUB_OFFLINE": "1"}, id="prepare offline (HF_HUB_OFFLINE)"),
    case("prepare", "--out", "shards", expect=("--source HuggingFaceFW/fineweb-edu", "cannot reach 127.0.0.1"),
         env={"HF_ENDPOINT": "http://127.0.0.1:{closed_port}"}, id="prepare offline (no connection)"),
    case("prepare", "--source", "rows.jsonl", "--out", "shards", "--workers", "1",
         expect=("--source rows.jsonl, line 3", "no 'text' field")),
    case("prepare", "--source", "rows.jsonl", "--out", "empty_dir", "--workers", "1",
         expect=("rows.jsonl, line 3",), id="prepare bad row into an existing empty folder (kept)"),
    case("prepare", "--source", "rows.jsonl", "--out", "new/deep/shards", "--workers", "1",
         expect=("rows.jsonl, line 3",), id="prepare bad row into new nested folders (none left)"),
    case("prepare", "--source", "numbers.jsonl", "--out", "shards", "--workers", "1",
         expect=("numbers.jsonl, line 2", "'text' is int")),
    case("prepare", "--source", "broken.jsonl", "--out", "shards", "--workers", "1",
         expect=("broken.jsonl, line 2", "cannot be read")),
    case("prepare", "--source", "rows.jsonl", "--text-field", "body", "--out", "shards", "--workers", "1",
         expect=("--source rows.jsonl", "'body'", "--text-field")),
    case("prepare", "--source", "nowhere.jsonl", "--out", "shards", expect=("--source nowhere.jsonl", "no such file")),
    case("prepare", "--source", "empty_dir", "--out", "shards", expect=("--source empty_dir", ".jsonl")),
    case(*SHAKESPEARE, "--out", "a_file", expect=("--out a_file", "is a file")),
    case(*SHAKESPEARE, "--out", "a_file/shards", expect=("--out a_file/shards", "is a file")),
    case(*SHAKESPEARE, "--out", "old_run", expect=("--out old_run", "other files")),
    case(*SHAKESPEARE, "--out", "shards", "--shard-size", "1", expect=("--shard-size", "1")),
    case(*SHAKESPEARE, "--out", "shards", "--max-tokens", "0", expect=("--max-tokens", "0")),
    case(*SHAKESPEARE, "--out", "shards", "--workers", "0", expect=("--workers", "0")),
    case(*SHAKESPEARE, "--out", "shards", "--shard-size", "1e6", expect=("--shard-size", "1e6")),
    case("prepare", "--source", "tinyshakespeare", expect=("--out",), id="prepare without --out"),
    # hellaswag
    case("hellaswag", "--checkpoint", "run.json", "--data", HELLASWAG,
         expect=("--checkpoint run.json", "not a file written by torch.save")),
    case("hellaswag", "--checkpoint", "pickled.pt", "--data", HELLASWAG,
         expect=("--checkpoint pickled.pt", "objects other than tensors")),
    case("hellaswag", "--checkpoint", "nowhere.pt", "--data", HELLASWAG, expect=("--checkpoint nowhere.pt", "no such")),
    case("hellaswag", "--checkpoint", "empty_dir", "--data", HELLASWAG, expect=("--checkpoint empty_dir", "holds no checkpoint")),
    case(*CKPT, "--json", "empty_dir", expect=("--json empty_dir", "is a folder")),
    case(*CKPT, "--json", "a_file/result.json", expect=("--json a_file/result.json", "is a file")),
    case(*CKPT, "--device", "cuda", expect=("--device cuda", "no CUDA device"), marks=NO_CUDA),
    case(*CKPT, "--device", "gpu", expect="--device gpu"),
    case(*CKPT, "--limit", "0", expect=("--limit", "0")),
    case(*CKPT, "--batch-size", "0", expect=("--batch-size", "0")),
    case(*CKPT, "--limit", "all", expect=("--limit", "all")),
    case("hellaswag", "--checkpoint", "latest.pt", "--data", "empty_dir", expect=("--data empty_dir", "is a folder")),
    case("hellaswag", "--checkpoint", "latest.pt", "--data", "nowhere.jsonl", expect=("--data nowhere.jsonl",)),
    case("hellaswag", "--checkpoint", "latest.pt", "--data", "rows.jsonl", expect=("--data", "rows.jsonl, line 1")),
    case("hellaswag", "--pretrained", "./nowhere", "--data", HELLASWAG, expect=("--pretrained ./nowhere",)),
    case("hellaswag", "--data", HELLASWAG, expect=("--checkpoint", "--pretrained"), id="hellaswag without a model"),
    # bench
    case("bench", "--device", "cuda", expect=("--device cuda",), marks=NO_CUDA),
    case("bench", "--device", "gpu", expect=("--device gpu",)),
    case("bench", "--rungs", "fp32,nope", expect=("--rungs fp32,nope", "unknown rung 'nope'")),
    case("bench", "--rungs", "fp32,fp32", expect=("--rungs fp32,fp32", "listed twice")),
    case("bench", "--model", "gpt5", expect=("--model gpt5", "unknown model")),
    case("bench", "--batch-size", "0", expect=("--batch-size", "positive")),
    case("bench", "--batch", "0", expect=("--batch-size", "positive")),  # the old spelling still works
    case("bench", "--model", "test", "--seq-len", "64", expect=("--seq-len", "block_size 32")),
    case("bench", "--steps", "-3", expect=("--steps", "positive")),
    case("bench", "--warmup", "-1", expect=("--warmup", ">= 0")),
    case("bench", "--peak-tflops", "nan", expect=("--peak-tflops", "positive")),
    case("bench", "--json", "empty_dir", expect=("--json empty_dir", "is a folder")),
    case("bench", "--json", "a_file/x.jsonl", expect=("--json a_file/x.jsonl", "not a folder")),
    case("bench", "--plot", "x.badext", expect=("--plot x.badext", "unknown image format")),
    case("bench", "--plot", "a_file/p.png", expect=("--plot a_file/p.png", "not a folder")),
    case(*SMOKE, "--hellaswag-every", "5", "--hellaswag-data", "rows.jsonl",
         expect=("--hellaswag-every 5 needs the HellaSwag data", "rows.jsonl")),
    case("prepare", "--source", "empty.txt", "--out", "shards", expect=("--source empty.txt", "empty (0 bytes)")),
    case("verify", "list_manifest", expect=("list_manifest/manifest.json", "not a gpt2lab manifest")),
    # sample
    case("sample", "--checkpoint", "nowhere", expect=("--checkpoint", "nowhere")),
    case("sample", "--checkpoint", "run.json", expect=("run.json",)),
    case("sample", "--checkpoint", "latest.pt", "--tokens", "0", expect=("--tokens", "0")),
    case("sample", "--checkpoint", "latest.pt", "--temperature", "nan", expect=("--temperature", "nan")),
    case("sample", "--checkpoint", "latest.pt", "--device", "cuda", expect=("--device cuda",), marks=NO_CUDA),
    case("sample", "--tokens", "5", expect=("--checkpoint", "--pretrained"), id="sample without a model"),
    case("sample", "--checkpoint", "latest.pt", "--tokens", "100000", expect=("--tokens", "10,000", "100,000")),
    case("sample", "--checkpoint", "latest.pt", "--prompt", "caf\udce9", expect=("--prompt", "UTF-8"),
         id="sample --prompt not UTF-8"),
    case("bench", "--json", "rows.jsonl", expect=("--json rows.jsonl", "not a ladder results file", "line 1")),
    # a place the permission bits allow (to root) that still cannot be written: found before any work
    case(*CKPT, "--json", "/proc/x.json", expect=("--json /proc/x.json",), id="hellaswag --json in /proc"),
    case("bench", "--json", "/proc/x.jsonl", expect=("--json /proc/x.jsonl",), id="bench --json in /proc"),
    case(*SHAKESPEARE, "--out", "/proc/shards", expect=("--out /proc/shards",), id="prepare --out in /proc"),
    case(*SMOKE, "--out-dir", "/proc/run", expect=("--out-dir /proc/run",), id="train --out-dir in /proc"),
    # verify
    case("verify", "nowhere", expect=("nowhere",)),
    case("verify", "empty_dir", expect=("empty_dir",)),
    case("verify", "a_file", expect=("a_file",)),
]

# Run as a real process too: the exit status, and nothing else (warnings, progress bars) on stderr.
SUBPROCESS_CASES = [
    case("prepare", "--out", "shards", expect=("--source HuggingFaceFW/fineweb-edu", "cannot reach"),
         env={"HF_ENDPOINT": "http://127.0.0.1:{closed_port}"}, id="prepare offline"),
    case("prepare", "--source", "rows.jsonl", "--out", "shards", expect="rows.jsonl, line 3"),
    case("hellaswag", "--pretrained", "gpt2", "--data", HELLASWAG, expect=("--pretrained gpt2", "HF_HUB_OFFLINE"),
         env={"HF_HUB_OFFLINE": "1", "HF_HOME": "hf-home"}, id="hellaswag --pretrained gpt2 offline"),
]


def make_files(root: Path) -> None:
    """The same small world for every case: things a user might point a flag at by mistake."""
    (root / "a_file").write_text("not a folder\n")
    (root / "empty.txt").write_text("")
    (root / "list_manifest").mkdir()
    (root / "list_manifest" / "manifest.json").write_text("[1, 2]\n")
    (root / "empty_dir").mkdir()
    (root / "old_run").mkdir()
    (root / "old_run" / "latest.pt").write_bytes(b"a previous run's checkpoint")
    (root / "old_run" / "log.jsonl").write_text('{"type": "train", "step": 0}\n')
    (root / "run.json").write_text('{"config": {}}\n')
    (root / "rows.jsonl").write_text('{"text": "one"}\n\n{"body": "no text here"}\n{"text": "three"}\n')
    (root / "numbers.jsonl").write_text('{"text": "one"}\n{"text": 2}\n')
    (root / "broken.jsonl").write_text('{"text": "one"}\n{"text": "two"\n')
    torch.save({"step": 1, "hook": print}, root / "pickled.pt")  # loading it would need weights_only=False
    (root / "latest.pt").write_bytes((root / "pickled.pt").read_bytes())


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with a hash of its bytes (folders as 'dir'): any write, creation or loss shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once, no network involved."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_world(tmp_path: Path, c: Case, monkeypatch) -> tuple[Path, dict]:
    root = tmp_path / "world"
    root.mkdir()
    make_files(root)
    env = {k: v.format(closed_port=closed_port()) for k, v in c.env.items()}
    env.setdefault("GPT2LAB_CACHE", str(root / "cache"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT", "GPT2LAB_HELLASWAG",
                "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(root)
    return root, env


def check_one_line(err: str, rc: int, c: Case) -> None:
    assert rc == 2, err
    assert "Traceback" not in err and "weights_only" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpt2lab"), err
    for text in c.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


@pytest.mark.parametrize("c", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(c, tmp_path, monkeypatch, capsys):
    root, _ = prepare_world(tmp_path, c, monkeypatch)

    def work_started(*args, **kwargs):
        raise AssertionError("the command started its work before rejecting its input")

    monkeypatch.setattr(train, "Trainer", work_started)
    monkeypatch.setattr(hellaswag, "evaluate", work_started)
    before = snapshot(root)
    try:
        rc = cli.main(c.argv)
    except SystemExit as e:  # argparse's errors leave through SystemExit, as in any argparse program
        rc = e.code
    check_one_line(capsys.readouterr().err, rc, c)
    assert snapshot(root) == before


@pytest.mark.slow
@pytest.mark.parametrize("c", SUBPROCESS_CASES)
def test_bad_input_as_a_real_process(c, tmp_path, monkeypatch):
    root, env = prepare_world(tmp_path, c, monkeypatch)
    before = snapshot(root)
    proc = subprocess.run([sys.executable, "-m", "gpt2lab", *c.argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    check_one_line(proc.stderr, proc.returncode, c)
    assert proc.stdout == ""
    assert snapshot(root) == before


def test_every_command_has_cases():
    commands = {c.values[0].argv[0] for c in CASES if c.values[0].argv}
    assert commands >= set(cli.COMMANDS), set(cli.COMMANDS) - commands


def test_argparse_errors_name_the_command_and_suggest_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["hellaswag", "--checkpoint", "x", "--limit", "many"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == ("gpt2lab hellaswag: error: argument --limit: invalid int value: 'many' "
                   "(see python -m gpt2lab hellaswag --help)\n")
