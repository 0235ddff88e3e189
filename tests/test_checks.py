"""base/checks.py: every command checks its paths before it works, in one line naming the flag and the value,
and writes nothing while it checks."""

import os
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

from gpt2lab.base.checks import flag, input_file, output_file, output_folder
from gpt2lab.base.errors import UserError

as_root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
NOBODY = 65534


@pytest.fixture
def place(tmp_path):
    """A folder the checks run in, as a user the permission bits apply to: this user, or (root may write
    anywhere) `nobody` in a forked child, with the folder made reachable for it."""
    if not as_root:
        return tmp_path
    base = Path(tempfile.mkdtemp(prefix="gpt2lab-checks-", dir="/tmp"))
    base.chmod(0o777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def unprivileged(check) -> None:
    """Run `check` (raises on failure) where permission bits bind: here, or as `nobody` when this is root."""
    if not as_root:
        check()
        return
    pid = os.fork()
    if pid == 0:  # the child drops root for good, runs the check and reports by its exit status
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as nobody (traceback above)"


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


def test_output_folder_refuses_a_read_only_place(place):
    ro, rw = place / "ro", place / "rw"
    ro.mkdir(mode=0o555)
    rw.mkdir(mode=0o777)
    ro.chmod(0o555)  # mkdir's mode passes through the umask
    rw.chmod(0o777)

    def check():
        with pytest.raises(UserError, match="no permission to write in this folder"):
            output_folder(ro, "--out")
        with pytest.raises(UserError, match=f"no permission to write in {ro}"):
            output_folder(ro / "new" / "deeper", "--out")
        assert output_folder(rw / "new", "--out") == rw / "new"  # the same check passes where writing is allowed

    try:
        unprivileged(check)
    finally:
        ro.chmod(0o755)


def test_output_file(tmp_path):
    assert output_file(tmp_path / "new" / "r.json", "--json") == tmp_path / "new" / "r.json"
    with pytest.raises(UserError, match=r"is a folder; give a file name, e.g. .*result\.json"):
        output_file(tmp_path, "--json")
    (tmp_path / "plain").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        output_file(tmp_path / "plain" / "r.json", "--json")


def test_output_file_refuses_a_read_only_file(place):
    f, g = place / "r.json", place / "w.json"
    for path, mode in ((f, 0o444), (g, 0o666)):
        path.write_text("{}")
        path.chmod(mode)

    def check():
        with pytest.raises(UserError, match="no permission to write this file"):
            output_file(f, "--json")
        assert output_file(g, "--json") == g

    unprivileged(check)


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


def test_input_file_refuses_an_unreadable_file(place):
    f, g = place / "secret", place / "public"
    for path, mode in ((f, 0o000), (g, 0o644)):
        path.write_text("x")
        path.chmod(mode)

    def check():
        with pytest.raises(UserError, match="no permission to read this file"):
            input_file(f, "--data")
        assert input_file(g, "--data") == g

    try:
        unprivileged(check)
    finally:
        f.chmod(0o644)
