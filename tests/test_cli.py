import subprocess
import sys

import pytest

from gpt2lab.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("prepare", "train", "bench", "hellaswag", "sample")) and len(COMMANDS) == 5


def test_unknown_or_missing_command_exits_2(capsys):
    for argv in (["nope"], []):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_module_entry_point_reports_user_errors_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "gpt2lab", "train", "--preset", "smoke", "--max-steps", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpt2lab train: error: max_steps must be positive, got 0"
