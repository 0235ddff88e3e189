import errno

import pytest
import torch

from gpt2lab.run import checkpoint
from gpt2lab.base.errors import UserError


def state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "train_config": {"max_steps": 9},
            "model_config": {"n_layer": 2}, "preset": "smoke"}


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_step_numbered_checkpoints_latest_pointer_and_pruning(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    for step in (2, 4, 6, 8):
        path = checkpoint.save(state(step), tmp_path, keep=3)
        assert path == tmp_path / f"step_{step:06d}.pt" and checkpoint.latest(tmp_path) == path
    assert files(tmp_path) == ["latest", "step_000004.pt", "step_000004.pt.sha256", "step_000006.pt",
                               "step_000006.pt.sha256", "step_000008.pt", "step_000008.pt.sha256"]
    assert (tmp_path / "latest").read_text() == "step_000008.pt\n"
    assert checkpoint.load(tmp_path)["step"] == 8  # a folder means its newest complete checkpoint
    assert checkpoint.load(tmp_path / "step_000004.pt")["model"]["w"].tolist() == [4.0] * 3
    assert checkpoint.peek(checkpoint.latest(tmp_path)) == {"step": 8, "train_config": {"max_steps": 9},
                                                            "model_config": {"n_layer": 2}, "preset": "smoke"}
    checkpoint.save(state(10), tmp_path, keep=0)  # 0 keeps every checkpoint
    assert checkpoint.saved_steps(tmp_path) == [4, 6, 8, 10]


def test_resumed_from_an_earlier_step_prunes_only_up_to_it(tmp_path):
    for step in (2, 4, 6):
        checkpoint.save(state(step), tmp_path, keep=0)
    checkpoint.save(state(3), tmp_path, keep=2)  # e.g. a resume from step 2 that has now reached step 3
    assert checkpoint.saved_steps(tmp_path) == [2, 3, 4, 6] and checkpoint.load(tmp_path)["step"] == 3


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(state(4), tmp_path, keep=3)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # most of the bytes are out when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(state(8), tmp_path, keep=3)
    assert files(tmp_path) == ["latest", "step_000004.pt", "step_000004.pt.sha256"]  # no half file, no temporary
    assert checkpoint.load(tmp_path)["step"] == 4


def test_torch_save_failing_with_runtime_error_is_an_os_error_and_keeps_the_previous(tmp_path, monkeypatch):
    checkpoint.save(state(4), tmp_path, keep=3)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes")  # torch's zip writer fails part way through
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed\nunexpected pos 1216 vs 1180")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"torch.save could not write it \(.*unexpected pos 1216 vs 1180\)") as e:
        checkpoint.save(state(8), tmp_path, keep=3)
    assert e.value.errno == errno.EIO and "\n" not in e.value.strerror
    monkeypatch.setattr(torch, "save", real_save)
    assert files(tmp_path) == ["latest", "step_000004.pt", "step_000004.pt.sha256"]
    assert checkpoint.load(tmp_path)["step"] == 4


def test_missing_unreadable_and_legacy_checkpoints(tmp_path):
    with pytest.raises(UserError, match="no checkpoint in"):
        checkpoint.load(tmp_path)
    torch.save(state(5), tmp_path / "latest.pt")  # a run folder from before step-numbered checkpoints
    assert checkpoint.latest(tmp_path) == tmp_path / "latest.pt" and checkpoint.load(tmp_path)["step"] == 5
    (tmp_path / "step_000007.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "latest").write_text("step_000007.pt\n")
    with pytest.raises(UserError, match="step_000007.pt is not a readable gpt2lab checkpoint"):
        checkpoint.load(tmp_path)
    (tmp_path / "latest").write_text("step_000009.pt\n")
    assert checkpoint.load(tmp_path)["step"] == 5  # the only loadable checkpoint left is the legacy one
    (tmp_path / "latest.pt").unlink()
    with pytest.raises(UserError, match=r"names step_000009.pt, which is missing, and no complete checkpoint is "
                                        r"left to fall back on \(step files: \['step_000007.pt'\]\)"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("pointer", [None, "step_000009.pt\n", "", "\x00\x00garbage", "../../etc/passwd"])
def test_a_missing_or_bad_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys, pointer):
    for step in (2, 4, 6):
        checkpoint.save(state(step), tmp_path)
    (tmp_path / "step_000008.pt").write_bytes(b"PK\x03\x04 torn")  # a checkpoint cut short: not loadable
    (tmp_path / "latest").unlink()
    if pointer is not None:
        (tmp_path / "latest").write_text(pointer)
    assert checkpoint.latest(tmp_path) == tmp_path / "step_000006.pt"
    assert checkpoint.load(tmp_path)["step"] == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("; using step_000006.pt, the newest complete checkpoint\n")
    assert (f"{tmp_path} has step checkpoints but no latest pointer" in err if pointer is None
            else f"{tmp_path / 'latest'} " in err)


def test_rng_state_round_trip():
    saved = checkpoint.rng_state()
    a = torch.rand(4)
    checkpoint.set_rng_state(saved)
    assert torch.equal(torch.rand(4), a)


def model_checkpoint(folder):
    """A checkpoint of a small real GPT, as the trainer writes one."""
    from dataclasses import asdict

    from gpt2lab.engine.model import GPT, get_config

    model = GPT(get_config("test"))
    return checkpoint.save({"step": 1, "model": model.state_dict(), "model_config": asdict(model.config),
                            "train_config": {}, "preset": "smoke"}, folder)


def poison_first_tensor(path):
    """Overwrite the start of the first tensor's bytes with float32 NaNs, as a bad disk or torn copy might."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        f.write(b"\x00\x00\xc0\x7f" * 16)


def test_a_checkpoint_proves_its_bytes(tmp_path, capsys):
    from gpt2lab.cli.main import main
    from gpt2lab.base.download import sha256_file

    path = model_checkpoint(tmp_path)
    sidecar = tmp_path / "step_000001.pt.sha256"
    assert sidecar.read_text() == f"{sha256_file(path)}  step_000001.pt\n"  # sha256sum -c reads it
    assert checkpoint.load(tmp_path)["step"] == 1
    poison_first_tensor(path)
    with pytest.raises(UserError, match=r"step_000001.pt is damaged: its bytes do not match the sha256 saved with it"):
        checkpoint.load(tmp_path)
    assert main(["sample", "--checkpoint", str(tmp_path), "--tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "Traceback" not in err
    sidecar.unlink()  # without its hash the damage is invisible: torch.load gives NaN weights
    assert not all(torch.isfinite(t).all() for t in checkpoint.load(tmp_path)["model"].values())


def test_checkpoints_without_a_hash_still_load_and_pruning_removes_hashes(tmp_path):
    torch.save(state(3), tmp_path / "step_000003.pt")  # written before checkpoints had a sidecar
    (tmp_path / "latest").write_text("step_000003.pt\n")
    assert checkpoint.load(tmp_path)["step"] == 3
    for step in (4, 5):
        checkpoint.save(state(step), tmp_path, keep=1)
    assert files(tmp_path) == ["latest", "step_000005.pt", "step_000005.pt.sha256"]


def test_the_fallback_skips_a_checkpoint_whose_hash_does_not_match(tmp_path, capsys):
    checkpoint.save(state(2), tmp_path)
    model_checkpoint(tmp_path)  # step 1 is now the pointer's; make step 2 damaged and the pointer missing
    poison_first_tensor(tmp_path / "step_000002.pt")
    (tmp_path / "latest").unlink()
    assert checkpoint.latest(tmp_path) == tmp_path / "step_000001.pt"


def test_a_truncated_newest_checkpoint_names_the_intact_older_one(tmp_path, capsys):
    for step in (1, 2, 3):
        checkpoint.save(state(step), tmp_path)
    newest = tmp_path / "step_000003.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short by a copy, a bad disk
    with pytest.raises(UserError, match=r"step_000003.pt is damaged: .*; step_000002.pt before it is intact: move "
                                        r"step_000003.pt out of the folder and the run resumes from that one$"):
        checkpoint.load(tmp_path)
    (tmp_path / "step_000003.pt.sha256").unlink()  # without its hash: the zip itself is unreadable
    with pytest.raises(UserError, match=r"not a readable gpt2lab checkpoint .*; step_000002.pt before it is intact"):
        checkpoint.load(tmp_path)
    newest.rename(tmp_path.parent / "moved.pt")  # as the message says: the pointer's file is gone, 2 is used
    assert checkpoint.load(tmp_path)["step"] == 2
    assert "using step_000002.pt, the newest complete checkpoint" in capsys.readouterr().err
    (tmp_path / "step_000002.pt").write_bytes(b"")
    (tmp_path / "step_000001.pt").write_bytes(b"")
    checkpoint.save(state(4), tmp_path)
    (tmp_path / "step_000004.pt").write_bytes(b"x")
    with pytest.raises(UserError, match=r"step_000004.pt is damaged: .*; no intact checkpoint is older$"):
        checkpoint.load(tmp_path)
