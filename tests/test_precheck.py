"""`make book`'s check before the first chapter: one line and exit 2 for what no chapter can stand in for."""

import pytest

from gpt2lab.cli import precheck
from gpt2lab.run import hellaswag


@pytest.fixture
def clean_env(tmp_path, monkeypatch, no_network):
    for name in ("GPT2LAB_HELLASWAG", "GPT2LAB_GPT2_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPT2LAB_SCALE", "smoke")
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_a_fresh_clone_is_ready(clean_env, capsys):
    assert precheck.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpt2lab book: ready: scale 'smoke'")
    assert "else the packaged 40-row sample" in out and (clean_env / "cache").is_dir()


@pytest.mark.parametrize("env, message", [
    ({"GPT2LAB_SCALE": "gpus"}, "GPT2LAB_SCALE='gpus' is not a scale"),
    ({"GPT2LAB_HELLASWAG": "{tmp}/typo.jsonl"}, "$GPT2LAB_HELLASWAG: HellaSwag file {tmp}/typo.jsonl (from $GPT2LAB_HELLASWAG) does not exist"),
    ({"GPT2LAB_HELLASWAG": "{tmp}/notes.txt"}, "$GPT2LAB_HELLASWAG: {tmp}/notes.txt, line 1: malformed HellaSwag example"),
    ({"GPT2LAB_GPT2_WEIGHTS": "{tmp}"}, "GPT2LAB_GPT2_WEIGHTS={tmp}: not a Hugging Face GPT-2 folder"),
    ({"GPT2LAB_CACHE": "{tmp}/notes.txt/cache"}, "cannot write the cache folder {tmp}/notes.txt/cache"),
])
def test_what_nothing_stands_in_for_stops_in_one_line(clean_env, monkeypatch, capsys, env, message):
    (clean_env / "notes.txt").write_text("not json\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=clean_env))
    assert precheck.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"gpt2lab book: error: {message.format(tmp=clean_env)}")


def test_a_full_hellaswag_file_is_named(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("GPT2LAB_HELLASWAG", str(hellaswag.sample_path()))
    assert precheck.main([]) == 0
    assert "HellaSwag from $GPT2LAB_HELLASWAG" in capsys.readouterr().out


def test_missing_module_and_missing_asset(clean_env, monkeypatch, capsys):
    monkeypatch.setitem(precheck.MODULES, "no_such_module_gpt2lab", "a chapter needs it")
    assert precheck.main([]) == 2
    assert "not installed: no_such_module_gpt2lab (a chapter needs it)" in capsys.readouterr().err
    monkeypatch.delitem(precheck.MODULES, "no_such_module_gpt2lab")
    monkeypatch.setattr(precheck, "PACKAGED", [*precheck.PACKAGED, ("hellaswag", "gone.jsonl")])
    assert precheck.main([]) == 2
    assert "without its data files (hellaswag/gone.jsonl)" in capsys.readouterr().err
    assert precheck.main(["--now"]) == 2
