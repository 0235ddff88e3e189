"""The interpreter named in printed commands (the resume hint) is the one that ran the command."""

from gpt2lab.base.shell import python_command


def _python(folder):
    folder.mkdir(parents=True)
    exe = folder / "python"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def test_python_on_the_path_is_called_python(tmp_path):
    venv = _python(tmp_path / "venv" / "bin")
    assert python_command(str(venv), cwd=tmp_path / "elsewhere", path=str(venv.parent)) == "python"


def test_a_venv_not_activated_is_named_by_its_path(tmp_path):
    system, venv = _python(tmp_path / "usr" / "bin"), _python(tmp_path / "repo" / ".venv" / "bin")
    assert python_command(str(venv), cwd=tmp_path / "repo", path=str(system.parent)) == ".venv/bin/python"
    assert python_command(str(venv), cwd=tmp_path / "other", path=str(system.parent)) == str(venv)
    spaced = _python(tmp_path / "my env" / "bin")
    assert python_command(str(spaced), cwd=tmp_path / "repo", path="") == f"'{spaced}'"


def test_train_without_a_preset_on_a_cpu_points_to_the_cpu_preset(tmp_path, monkeypatch, capsys):
    import torch

    from gpt2lab.cli.main import main

    monkeypatch.chdir(tmp_path)  # no data/edu_fineweb10B here, as on a fresh clone
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --preset given" in err and "gpt2lab prepare" not in err
    assert f"`{python_command()} -m gpt2lab train --preset cpu-tiny-shakespeare`" in err
    assert not (tmp_path / "run").exists()
