"""base/checks.py: every command checks its paths before it works, in one line naming the flag and the value,
and writes nothing while it checks."""

import os

import pytest

from gpt2lab.base.checks import flag, input_file, output_file, output_folder
from gpt2lab.base.errors import UserError

as_root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
needs_permissions = pytest.mark.skipif(as_root, reason="root may write anywhere")


def test_flag_spells_a_setting_as_typed():
    assert flag("max_steps") == "--max-steps" and flag("seed") == "--seed"


def test_output_folder_new_or_existing(tmp_path):
    assert output_folder(tmp_path, "--out") == tmp_path
    deep = tmp_path / "a" / "b" / "c"
    assert output_folder(deep, "--out") == deep
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_output_folder_refuses_a_file_where_a_folder_goes(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(UserError, match=rf"^--out {f}: is a file, not a folder$"):
        output_folder(f, "--out")
    with pytest.raises(UserError, match=rf"^--out-dir {f / 'run'}: {f} is a file, not a folder$"):
        output_folder(f / "run", "--out-dir")


@needs_permissions
def test_output_folder_refuses_a_read_only_place(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="no permission to write in this folder"):
            output_folder(ro, "--out")
        with pytest.raises(UserError, match=f"no permission to write in {ro}"):
            output_folder(ro / "new" / "deeper", "--out")
    finally:
        ro.chmod(0o755)


def test_output_file(tmp_path):
    assert output_file(tmp_path / "new" / "r.json", "--json") == tmp_path / "new" / "r.json"
    with pytest.raises(UserError, match=r"is a folder; give a file name, e.g. .*result\.json"):
        output_file(tmp_path, "--json")
    (tmp_path / "plain").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        output_file(tmp_path / "plain" / "r.json", "--json")


@needs_permissions
def test_output_file_refuses_a_read_only_file(tmp_path):
    f = tmp_path / "r.json"
    f.write_text("{}")
    f.chmod(0o444)
    with pytest.raises(UserError, match="no permission to write this file"):
        output_file(f, "--json")


def test_input_file(tmp_path, monkeypatch):
    f = tmp_path / "data.jsonl"
    f.write_text("{}\n")
    assert input_file(f, "--data") == f
    with pytest.raises(UserError, match=rf"^--data {tmp_path / 'missing'}: no such file$"):
        input_file(tmp_path / "missing", "--data")
    with pytest.raises(UserError, match="is a folder, not a file"):
        input_file(tmp_path, "--data")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert input_file("~/data.jsonl", "--data") == f  # a ~ the shell did not expand


@needs_permissions
def test_input_file_refuses_an_unreadable_file(tmp_path):
    f = tmp_path / "secret"
    f.write_text("x")
    f.chmod(0o000)
    try:
        with pytest.raises(UserError, match="no permission to read this file"):
            input_file(f, "--data")
    finally:
        f.chmod(0o644)
