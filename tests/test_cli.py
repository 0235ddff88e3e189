import subprocess
import sys

import pytest

from gpt2lab.cli.main import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("prepare", "train", "bench", "hellaswag", "verify", "sample")) and len(COMMANDS) == 6


def test_unknown_or_missing_command_exits_2(capsys):
    for argv in (["nope"], []):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


@pytest.mark.slow
def test_module_entry_point_reports_user_errors_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "gpt2lab", "train", "--preset", "smoke", "--max-steps", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpt2lab train: error: --max-steps must be positive, got 0"


def test_train_help_explains_every_setting_and_lists_choices(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside a name like gpu-tiny-shakespeare
    from gpt2lab.run.config import choices, field_help, field_types
    from gpt2lab.base.dist import DEVICE_CHOICES

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    helps = field_help()
    for name in field_types():
        assert helps.get(name), f"TrainConfig.{name} has no comment to serve as its --help line"
        assert f"--{name.replace('_', '-')} " in out and " ".join(helps[name].split()) in out
    for name, allowed in choices().items():
        assert f"one of: {', '.join(allowed)}" in out, name
    assert DEVICE_CHOICES in out and "gpu-tiny-shakespeare" in out


def test_hellaswag_calls_gpt3_small_by_its_name(tmp_path, capsys, no_network):
    pytest.importorskip("transformers")
    from gpt2lab.run.hellaswag import sample_path
    from gpt2lab.engine.pretrained import random_hf_gpt2

    random_hf_gpt2(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2).save_pretrained(tmp_path)
    assert main(["hellaswag", "--pretrained", str(tmp_path), "--data", str(sample_path()), "--limit", "2",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "GPT-3 Small: 0.337" in out and "GPT-3 124M" not in out
