import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2lab import checkpoint, dist
from gpt2lab.cli import main
from gpt2lab.config import get_preset
from gpt2lab.errors import TrainingDiverged, UserError
from gpt2lab.knobs import Knobs, build
from gpt2lab.model import GPT, get_config
from gpt2lab.prepare import prepare
from gpt2lab.step import capture_gradients
from gpt2lab.train import read_log, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    prepare("tinyshakespeare", folder, shard_size=33_800, workers=1, progress=False)
    return str(folder)


def tiny(data, **kw):
    base = dict(data=data, batch_size=2, seq_len=32, total_batch=128, max_steps=6, warmup_steps=2,
                val_every=3, val_steps=1, sample_every=3, sample_tokens=4, checkpoint_every=3, log_every=1)
    return get_preset("smoke", **{**base, **kw})


def test_grad_accumulation_equals_one_big_batch():
    cfg = get_config("test")
    x = torch.randint(0, cfg.vocab_size, (8, 16))
    y = torch.randint(0, cfg.vocab_size, (8, 16))
    results = []
    for micro in (1, 4):
        built = build(Knobs(attn="flash"), cfg, "cpu", seed=0)
        chunks = iter(zip(x.chunk(micro), y.chunk(micro)))
        res, grads = capture_gradients(built, lambda: next(chunks), grad_accum=micro)
        results.append((res.loss, grads))
    (loss1, g1), (loss4, g4) = results
    torch.testing.assert_close(loss4, loss1, rtol=1e-6, atol=1e-6)
    for a, b in zip(g1, g4):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert max(g.abs().max().item() for g in g1) > 0


def test_clipping_caps_the_global_norm():
    cfg = get_config("test")
    built = build(Knobs(), cfg, "cpu", seed=0)
    x = torch.randint(0, cfg.vocab_size, (4, 16))
    res, grads = capture_gradients(built, lambda: (x, x), grad_clip=1e-3)
    assert res.grad_norm.item() > 1e-3  # reported norm is the one before clipping
    clipped = torch.sqrt(sum((g ** 2).sum() for g in grads))
    assert clipped.item() == pytest.approx(1e-3, rel=1e-4)


def test_run_logs_and_checkpoints(shakespeare, tmp_path, capsys):
    before = torch.get_float32_matmul_precision()
    summary = train(tiny(shakespeare), tmp_path, progress=False, echo=True)
    assert summary["step"] == 6
    assert torch.get_float32_matmul_precision() == before  # the rung's TF32 setting does not leak
    out = capsys.readouterr().out
    assert "128 tokens/step = 2 x 32 x 1 process(es) x 2 micro-steps; new run" in out
    assert "weight decay on 10 tensors" in out and "step     5 | loss" in out
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(6))
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    assert [r["step"] for r in read_log(tmp_path, "val")] == [0, 3, 5]
    samples = read_log(tmp_path, "sample")
    assert samples and samples[0]["text"][0].startswith("Hello, I'm a language model,")
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert state["step"] == 6 and set(state) >= {"model", "optimizer", "loader", "rng", "model_config"}
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["grad_accum"] == 2 and run["knobs"]["fused_adamw"]
    model = checkpoint.load_model(tmp_path)
    assert isinstance(model, GPT) and model.config.n_layer == 2


def test_resume_gives_the_same_losses(shakespeare, tmp_path):
    train(tiny(shakespeare), tmp_path / "full", progress=False, echo=False)
    train(tiny(shakespeare, stop_after=3), tmp_path / "split", progress=False, echo=False)
    assert len(read_log(tmp_path / "split")) == 3
    train(tiny(shakespeare), tmp_path / "split", resume=True, progress=False, echo=False)
    full, split = read_log(tmp_path / "full"), read_log(tmp_path / "split")
    assert [r["loss"] for r in split] == [r["loss"] for r in full]  # bit-exact on CPU
    assert [r["val_loss"] for r in read_log(tmp_path / "split", "val")] == \
        [r["val_loss"] for r in read_log(tmp_path / "full", "val")]


def test_existing_run_needs_resume_and_missing_checkpoint_is_clear(shakespeare, tmp_path):
    train(tiny(shakespeare, max_steps=1), tmp_path, progress=False, echo=False)
    with pytest.raises(UserError, match="pass --resume"):
        train(tiny(shakespeare, max_steps=1), tmp_path, progress=False, echo=False)
    with pytest.raises(UserError, match="no checkpoint at"):
        train(tiny(shakespeare), tmp_path / "empty", resume=True, progress=False, echo=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shakespeare, tmp_path, monkeypatch):
    original = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = original(self, idx, targets)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 8:  # 2 micro-batches per step: step 4 goes bad
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 4.*last good checkpoint"):
        train(tiny(shakespeare, val_every=0, sample_every=0), tmp_path, progress=False, echo=False)
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["step"] == 3
    assert all(torch.isfinite(p).all() for p in checkpoint.load(tmp_path)["model"].values())


def run_cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpt2lab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_mid_run_resumes_from_last_checkpoint(shakespeare, tmp_path):
    args = ["train", "--preset", "smoke", "--data", shakespeare, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "64", "--max-steps", "400", "--checkpoint-every", "5", "--val-every", "0",
            "--sample-every", "0", "--no-progress"]
    proc = run_cli([*args, "--out-dir", str(tmp_path / "killed")])
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "killed" / "latest.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(tmp_path / "killed" / "latest.pt", weights_only=True)["step"]
    assert 5 <= step < 400 and step % 5 == 0
    resumed = run_cli([*args, "--max-steps", str(step + 10), "--out-dir", str(tmp_path / "killed"), "--resume"])
    # the schedule depends on max_steps, so the reference run uses the same value throughout
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    log = read_log(tmp_path / "killed")
    assert [r["step"] for r in log] == list(range(step + 10))


def test_cli_user_errors(shakespeare, tmp_path, capsys):
    assert main(["train", "--preset", "smoke", "--data", shakespeare, "--total-batch", "1000",
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gpt2lab train: error: --total-batch 1000 is not divisible by --batch-size x --seq-len x processes"
                   " = 4 x 64 x 1 = 256")
    assert main(["train", "--preset", "smoke", "--data", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 2
    assert "is not a prepared shard folder" in capsys.readouterr().err
    for bad in (["--max-steps", "ten"], ["--preset", "nope"], ["--compile", "maybe"], ["--rung", "warp"]):
        with pytest.raises(SystemExit) as e:
            main(["train", *bad])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "--total-batch" in capsys.readouterr().out


def torchrun(args, nproc=2, extra=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc_per_node={nproc}", "-m", "gpt2lab", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ddp_args(data, out):
    return ["train", "--preset", "smoke", "--data", data, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "128", "--max-steps", "4", "--val-every", "2", "--sample-every", "0",
            "--no-progress", "--out-dir", str(out)]


def test_ddp_two_processes_match_one_process(shakespeare, tmp_path):
    proc = dist.launch(ddp_args(shakespeare, tmp_path / "ddp"), nproc=2, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out
    single = run_cli(ddp_args(shakespeare, tmp_path / "single"))
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err
    a = torch.load(tmp_path / "ddp" / "latest.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "latest.pt", weights_only=True)
    assert checkpoint.max_param_diff(tmp_path / "ddp", tmp_path / "single") < 1e-5
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["grad_accum"] == 1
    assert json.loads((tmp_path / "single" / "run.json").read_text())["grad_accum"] == 2
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6, msg=k)
    la, lb = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)  # loss averaged over ranks
    assert out.count("| loss ") == 4  # only rank 0 prints


def test_two_node_launch_on_loopback(shakespeare, tmp_path):
    rdzv = ["--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29547", "--rdzv-id=gpt2lab-test"]
    nodes = [torchrun(ddp_args(shakespeare, tmp_path / "run"), nproc=1, extra=[*rdzv, f"--node-rank={i}"]) for i in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    assert len(read_log(tmp_path / "run")) == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2


def test_hellaswag_is_logged_at_eval_steps(shakespeare, tmp_path):
    from gpt2lab import hellaswag

    cfg = tiny(shakespeare, max_steps=4, hellaswag_every=2, hellaswag_limit=8,
               hellaswag_data=str(hellaswag.sample_path()), val_every=0, sample_every=0)
    train(cfg, tmp_path, progress=False, echo=False)
    logged = read_log(tmp_path, "hellaswag")
    assert [r["step"] for r in logged] == [0, 2, 3]
    assert all(r["n"] == 8 and 0 <= r["correct_norm"] <= 8 and r["acc_norm"] == r["correct_norm"] / 8 for r in logged)
