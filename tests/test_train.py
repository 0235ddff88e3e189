import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2lab.run import checkpoint
from gpt2lab.base import dist
from gpt2lab.base.shell import python_command
from gpt2lab.cli.main import main
from gpt2lab.run.config import get_preset
from gpt2lab.engine.data import ShardLoader
from gpt2lab.base.errors import RunStopped, TrainingDiverged, UserError
from gpt2lab.engine.knobs import Knobs, build
from gpt2lab.engine.model import GPT, get_config
from gpt2lab.engine.prepare import prepare
from gpt2lab.engine.step import capture_gradients, train_step
from gpt2lab.run.loop import Trainer
from gpt2lab.run.train import plan, read_log, start, train

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


def test_a_nonfinite_gradient_skips_the_optimizer_step():
    cfg = get_config("test")
    x = torch.randint(0, cfg.vocab_size, (4, 16))
    for skip in (True, False):
        built = build(Knobs(), cfg, "cpu", seed=0)
        before = [p.detach().clone() for p in built.raw.parameters()]
        hook = built.raw.lm_head.weight.register_hook(lambda g: g * float("nan"))
        result = train_step(built, lambda: (x, x), skip_nonfinite=skip)
        hook.remove()
        assert torch.isnan(result.grad_norm) and torch.isfinite(result.loss)
        after = list(built.raw.parameters())
        if skip:
            assert result.skipped and not built.optimizer.state  # no update, no moment estimates
            assert all(torch.equal(a, b) for a, b in zip(after, before))
            assert all(p.grad is None for p in after)
        else:  # what the trainer did before: a NaN gradient poisons the weights
            assert not result.skipped and not all(torch.isfinite(p).all() for p in after)


@pytest.mark.slow
def test_run_logs_and_checkpoints(shakespeare, tmp_path, capsys):
    before = torch.get_float32_matmul_precision()
    summary = train(tiny(shakespeare), tmp_path, progress=False, echo=True, preset="smoke")
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
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_000003.pt", "step_000006.pt"]
    state = torch.load(checkpoint.latest(tmp_path), weights_only=True)
    assert state["step"] == 6 and set(state) >= {"model", "optimizer", "loader", "rng", "model_config", "train_config"}
    assert state["preset"] == "smoke" and state["train_config"]["max_steps"] == 6
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["grad_accum"] == 2 and run["knobs"]["fused_adamw"]
    assert run["preset"] == "smoke" and run["config"]["deterministic"] is False
    model = checkpoint.load_model(tmp_path)
    assert isinstance(model, GPT) and model.config.n_layer == 2


@pytest.mark.slow
def test_resume_gives_the_same_losses(shakespeare, tmp_path):
    train(tiny(shakespeare), tmp_path / "full", progress=False, echo=False)
    train(tiny(shakespeare, stop_after=3), tmp_path / "split", progress=False, echo=False)
    assert len(read_log(tmp_path / "split")) == 3
    train(tiny(shakespeare), tmp_path / "split", resume=True, progress=False, echo=False)
    full, split = read_log(tmp_path / "full"), read_log(tmp_path / "split")
    assert [r["loss"] for r in split] == [r["loss"] for r in full]  # bit-exact on CPU
    assert [r["lr"] for r in split] == [r["lr"] for r in full]
    assert [r["val_loss"] for r in read_log(tmp_path / "split", "val")] == \
        [r["val_loss"] for r in read_log(tmp_path / "full", "val")]


@pytest.mark.slow
def test_dropout_run_resumes_exactly_and_evaluates_without_dropout(shakespeare, tmp_path, monkeypatch):
    """Dropout draws from the RNG, which the checkpoint saves: a resumed run still equals a straight one. Validation
    runs in eval mode, so the same weights always give the same val loss, and training continues in train mode."""
    train(tiny(shakespeare, dropout=0.2), tmp_path / "full", progress=False, echo=False)
    train(tiny(shakespeare, dropout=0.2, stop_after=3), tmp_path / "split", progress=False, echo=False)
    train(tiny(shakespeare, dropout=0.2), tmp_path / "split", resume=True, progress=False, echo=False)
    full, split = read_log(tmp_path / "full"), read_log(tmp_path / "split")
    assert [r["loss"] for r in split] == [r["loss"] for r in full]
    train(tiny(shakespeare), tmp_path / "plain", progress=False, echo=False)
    assert [r["loss"] for r in full] != [r["loss"] for r in read_log(tmp_path / "plain")]  # dropout did act

    trainer = start(plan(tmp_path / "modes", tiny(shakespeare, dropout=0.5)), progress=False, echo=False)
    modes = []
    real_val_loss = trainer.val_loss
    monkeypatch.setattr(trainer, "val_loss", lambda: modes.append(trainer.built.model.training) or real_val_loss())
    trainer._evaluate()
    assert modes == [False] and trainer.built.model.training
    trainer.built.model.eval()
    assert trainer.val_loss() == trainer.val_loss()


@pytest.mark.slow
def test_existing_run_needs_resume_and_missing_checkpoint_is_clear(shakespeare, tmp_path):
    train(tiny(shakespeare, max_steps=1), tmp_path, progress=False, echo=False)
    with pytest.raises(UserError, match="pass --resume"):
        train(tiny(shakespeare, max_steps=1), tmp_path, progress=False, echo=False)
    with pytest.raises(UserError, match="no checkpoint in .*empty to resume; start a new run there without --resume"):
        train(tiny(shakespeare), tmp_path / "empty", resume=True, progress=False, echo=False)


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(shakespeare, tmp_path, capsys):
    """kill -9 before the first checkpoint leaves run.json and a log but nothing to continue: --resume starts
    the recorded run again (before: --resume said 'start a new run' and a new run was refused)."""
    train(tiny(shakespeare), tmp_path / "straight", progress=False, echo=False)
    out = tmp_path / "early"
    train(tiny(shakespeare, checkpoint_every=0, stop_after=2), out, progress=False, echo=False)
    for path in out.glob("step_*"):  # what a kill -9 at step 2 leaves: the stop's own checkpoint never written
        path.unlink()
    (out / "latest").unlink()
    assert len(read_log(out)) == 2 and (out / "run.json").is_file()
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny(shakespeare), out, progress=False, echo=False)  # a new run still may not replace it
    capsys.readouterr()
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress"]) == 0
    assert "holds no checkpoint yet (the run stopped before its first one); it starts again from step 0" in \
        capsys.readouterr().err
    assert [(r["step"], r["loss"], r["lr"]) for r in read_log(out)] == \
        [(r["step"], r["loss"], r["lr"]) for r in read_log(tmp_path / "straight")]  # the 6 steps, each once


@pytest.mark.slow
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
    assert checkpoint.load(tmp_path)["step"] == 3
    assert all(torch.isfinite(p).all() for p in checkpoint.load(tmp_path)["model"].values())


@pytest.mark.slow
def test_nan_gradient_stops_before_the_update_and_nonfinite_weights_are_never_saved(shakespeare, tmp_path, monkeypatch):
    original = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = original(self, idx, targets)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 8:  # 2 micro-batches per step: step 4's gradients are NaN, its loss is not
                loss.register_hook(lambda g: g * float("nan"))
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    trainer = start(plan(tmp_path, tiny(shakespeare, val_every=0, sample_every=0)), progress=False, echo=False)
    with pytest.raises(TrainingDiverged, match=r"gradient norm became nan \(loss [0-9.]+\) at step 4; the update was "
                                               r"skipped; stopped, the last good checkpoint is .*step_000003.pt"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.built.raw.parameters())  # the bad step changed nothing
    with torch.no_grad():
        next(trainer.built.raw.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="NaN or infinite values at step 4; no checkpoint written"):
        trainer.save()
    assert checkpoint.saved_steps(tmp_path) == [3] and checkpoint.load(tmp_path)["step"] == 3


def run_cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpt2lab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_steps(proc, out, steps, timeout=120):
    """Block until the run in `out` has logged `steps` training steps; fail clearly if it dies or stalls."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = out / "log.jsonl"
        if log.exists() and log.read_text().count('"type": "train"') >= steps:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before logging {steps} steps: {proc.communicate()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {steps} training steps logged in {out} within {timeout} s: {proc.communicate()}")


def cli_args(data, out, *extra):
    return ["train", "--preset", "smoke", "--data", data, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "64", "--max-steps", "5000", "--checkpoint-every", "5", "--val-every", "10",
            "--sample-every", "0", "--no-progress", "--out-dir", str(out), *extra]


def train_records(out):
    return [(r["step"], r["loss"], r["lr"]) for r in read_log(out)]


def start_then_signal(shakespeare, out, steps, sig):
    """Start a run in `out`, send it `sig` once it has logged `steps` steps; its exit code, its stderr and the
    step of the checkpoint it left."""
    proc = run_cli(cli_args(shakespeare, out))
    wait_for_steps(proc, out, steps)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, checkpoint.load(out)["step"]


def assert_same_as_a_straight_run(shakespeare, out, straight_out, steps):
    """The interrupted and resumed run in `out` logged what one run without a break logs in its first `steps`
    steps: the same per-step losses and learning rates, every step once."""
    straight = run_cli([*cli_args(shakespeare, straight_out), "--stop-after", str(steps)])
    assert straight.wait(timeout=300) == 0, straight.communicate()
    assert train_records(out) == train_records(straight_out)
    assert [r[0] for r in train_records(out)] == list(range(steps))


@pytest.mark.slow
def test_sigkill_mid_run_resumes_from_last_checkpoint(shakespeare, tmp_path):
    """kill -9 saves nothing: the run resumes from the last periodic checkpoint and redoes the steps after it."""
    out = tmp_path / "killed"
    returncode, _, step = start_then_signal(shakespeare, out, 12, signal.SIGKILL)
    assert returncode == -signal.SIGKILL and step >= 10 and step % 5 == 0
    resumed = run_cli([*cli_args(shakespeare, out), "--resume", "--stop-after", "7"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert_same_as_a_straight_run(shakespeare, out, tmp_path / "straight", step + 7)


@pytest.mark.slow
def test_a_second_train_into_a_live_run_is_refused_and_the_run_goes_on(shakespeare, tmp_path, capsys):
    out = tmp_path / "live"
    proc = run_cli(cli_args(shakespeare, out))
    try:
        wait_for_steps(proc, out, 2)
        for extra in (["--resume"], ["--preset", "smoke", "--data", shakespeare]):
            assert main(["train", "--out-dir", str(out), "--no-progress", *extra]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"{out} is in use by a training run still running (pid {proc.pid}" in err
        wait_for_steps(proc, out, 6)  # the live run was not disturbed
    finally:
        proc.kill()
        proc.wait()
    assert main(["train", "--out-dir", str(out), "--resume", "--stop-after", "1", "--no-progress"]) == 0


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_printed_command_resumes_exactly(shakespeare, tmp_path):
    out = tmp_path / "preempted"
    returncode, err, step = start_then_signal(shakespeare, out, 8, signal.SIGTERM)
    assert returncode == 143, err
    assert step >= 8 and len(read_log(out)) == step  # the checkpoint holds every step that was logged
    message = err.strip().splitlines()[-1]
    command = f"{python_command()} -m gpt2lab train --out-dir {out} --resume"
    assert message == (f"gpt2lab train: error: stopped by SIGTERM at step {step}; checkpoint "
                       f"{out}/step_{step:06d}.pt; resume with: {command}")
    # the printed command, with flags that may change on resume
    resumed = run_cli([*command.split()[3:], "--stop-after", "6", "--val-every", "3", "--keep-checkpoints", "1",
                       "--log-every", "2", "--checkpoint-every", "4"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert_same_as_a_straight_run(shakespeare, out, tmp_path / "straight", step + 6)
    assert checkpoint.saved_steps(out)[-1] == step + 6 and len(checkpoint.saved_steps(out)) <= 2


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


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(shakespeare, tmp_path):
    proc = dist.launch(ddp_args(shakespeare, tmp_path / "ddp"), nproc=2, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out
    single = run_cli(ddp_args(shakespeare, tmp_path / "single"))
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err
    a, b = checkpoint.load(tmp_path / "ddp"), checkpoint.load(tmp_path / "single")
    assert checkpoint.max_param_diff(tmp_path / "ddp", tmp_path / "single") < 1e-5
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["grad_accum"] == 1
    assert json.loads((tmp_path / "single" / "run.json").read_text())["grad_accum"] == 2
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6, msg=k)
    la, lb = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)  # loss averaged over ranks
    assert out.count("| loss ") == 4  # only rank 0 prints


@pytest.mark.slow
def test_two_node_launch_on_loopback(shakespeare, tmp_path):
    import socket

    with socket.socket() as s:  # a free port: a fixed one collides with any other run of this test
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=gpt2lab-test"]
    nodes = [torchrun(ddp_args(shakespeare, tmp_path / "run"), nproc=1, extra=[*rdzv, f"--node-rank={i}"]) for i in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    assert len(read_log(tmp_path / "run")) == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_hellaswag_is_logged_at_eval_steps(shakespeare, tmp_path, capsys):
    from gpt2lab.run import hellaswag

    cfg = tiny(shakespeare, max_steps=4, hellaswag_every=2, hellaswag_limit=8,
               hellaswag_data=str(hellaswag.sample_path()), val_every=0, sample_every=0)
    train(cfg, tmp_path, progress=False, echo=True)
    logged = read_log(tmp_path, "hellaswag")
    assert [r["step"] for r in logged] == [0, 2, 3]
    assert all(r["n"] == 8 and 0 <= r["correct_norm"] <= 8 and r["acc_norm"] == r["correct_norm"] / 8 for r in logged)
    from gpt2lab.base.stats import format_accuracy

    printed = capsys.readouterr().out  # the console line carries the 95% interval and the chance level
    assert f"hellaswag acc_norm {format_accuracy(logged[0]['correct_norm'], 8, chance=0.25)}" in printed


def short_args(data, out, *extra):
    return ["train", "--preset", "smoke", "--data", data, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "128", "--max-steps", "12", "--checkpoint-every", "4", "--val-every", "4",
            "--sample-every", "0", "--no-progress", "--out-dir", str(out), *extra]


@pytest.mark.slow
def test_resume_refuses_flags_that_change_the_computation(shakespeare, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(short_args(shakespeare, out, "--stop-after", "4")) == 0
    refused = {
        ("--max-steps", "35"): "--max-steps 35 would change the run being resumed, which was started with --max-steps 12",
        ("--total-batch", "256"): "--total-batch 256 would change the run being resumed, which was started with --total-batch 128",
        ("--seed", "1"): "--seed 1 would change the run being resumed, which was started with --seed 1337",
        ("--max-lr", "0.01"): "--max-lr 0.01 would change the run being resumed, which was started with --max-lr 0.001",
        ("--deterministic", "true"): "--deterministic true would change the run being resumed, which was started with --deterministic false",
        ("--model", "cpu-small"): "--model cpu-small would change the run being resumed, which was started with --model cpu-tiny",
        ("--preset", "cpu-tiny-shakespeare"): "--preset cpu-tiny-shakespeare does not match the run being resumed, which was started with --preset smoke",
    }
    for given, expected in refused.items():
        assert main(["train", "--out-dir", str(out), "--resume", "--no-progress", *given]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"gpt2lab train: error: {expected}; "), err
    # the same settings typed again are not a change; a plain --resume finishes the run
    assert main(short_args(shakespeare, out, "--resume")) == 0
    assert [r["step"] for r in read_log(out)] == list(range(12))
    capsys.readouterr()
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"nothing to do: the run in {out} already finished all 12 steps")


@pytest.mark.slow
def test_resumed_runs_equal_a_straight_run_whatever_allowed_flags_they_carry(shakespeare, tmp_path, capsys):
    assert main(short_args(shakespeare, tmp_path / "straight")) == 0
    out = tmp_path / "pieces"
    assert main(short_args(shakespeare, out, "--stop-after", "3")) == 0
    pieces = [["--stop-after", "2", "--val-every", "1", "--sample-every", "1", "--sample-tokens", "3"],
              ["--stop-after", "4", "--log-every", "3", "--checkpoint-every", "1", "--keep-checkpoints", "2",
               "--val-steps", "1", "--hellaswag-every", "2", "--hellaswag-limit", "4", "--sample-prompt", "To be"],
              []]
    from gpt2lab.run import hellaswag

    pieces[1] += ["--hellaswag-data", str(hellaswag.sample_path())]
    for flags in pieces:
        assert main(["train", "--out-dir", str(out), "--resume", "--no-progress", *flags]) == 0
    assert train_records(out) == train_records(tmp_path / "straight")  # losses and learning rates, bit for bit
    assert [r[0] for r in train_records(out)] == list(range(12))
    assert checkpoint.load(out)["train_config"]["max_steps"] == 12


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(shakespeare, tmp_path, monkeypatch):
    real = Trainer._train

    def interrupted_at_step_2(self, batches):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the step still finishes
        return real(self, batches)

    monkeypatch.setattr(Trainer, "_train", interrupted_at_step_2)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    with pytest.raises(RunStopped) as e:
        train(tiny(shakespeare, checkpoint_every=0), tmp_path, progress=False, echo=False)
    assert e.value.exit_code == 130
    assert str(e.value) == (f"stopped by Ctrl-C (SIGINT) at step 3; checkpoint {tmp_path}/step_000003.pt; "
                            f"resume with: {python_command()} -m gpt2lab train --out-dir {tmp_path} --resume")
    assert checkpoint.load(tmp_path)["step"] == 3 and len(read_log(tmp_path)) == 3
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.setattr(Trainer, "_train", real)
    train(tiny(shakespeare, checkpoint_every=0), tmp_path, resume=True, progress=False, echo=False)
    train(tiny(shakespeare, checkpoint_every=0), tmp_path / "straight", progress=False, echo=False)
    assert train_records(tmp_path) == train_records(tmp_path / "straight")


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(shakespeare, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk_at_step_8(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_step_8)
    out = tmp_path / "run"
    assert main(short_args(shakespeare, out)) == 1
    err = capsys.readouterr().err
    assert err == (f"gpt2lab train: error: could not write the checkpoint of step 8 in {out}: No space left on device; "
                   f"the previous checkpoint {out}/step_000004.pt is intact; make room, then resume with: "
                   f"{python_command()} -m gpt2lab train --out-dir {out} --resume\n")
    assert sorted(p.name for p in out.iterdir()) == ["latest", "log.jsonl", "run.json", "run.lock", "step_000004.pt",
                                                     "step_000004.pt.sha256"]
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress"]) == 0
    assert main(short_args(shakespeare, tmp_path / "straight")) == 0
    assert train_records(out) == train_records(tmp_path / "straight")


@pytest.mark.slow
def test_a_corrupt_shard_mid_run_stops_with_a_checkpoint(tmp_path, capsys):
    data = tmp_path / "shards"
    prepare("tinyshakespeare", data, shard_size=4_000, workers=1, progress=False)
    loader = ShardLoader(data, "train", 2, 32, seed=1337)
    second = data / loader.entries[loader._order(0)[1]]["file"]  # the second shard the run reads
    good = second.read_bytes()
    second.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size: found by its sha256, when first read
    out = tmp_path / "run"
    flags = ["--max-steps", "40", "--checkpoint-every", "0", "--val-every", "0"]
    assert main(short_args(str(data), out, *flags)) == 2
    step = checkpoint.load(out)["step"]
    assert 0 < step < 40 and len(read_log(out)) == step
    err = capsys.readouterr().err
    assert err == (f"gpt2lab train: error: stopped by a data error at step {step} (shard {second} is corrupt: its "
                   f"sha256 does not match the manifest); checkpoint {out}/step_{step:06d}.pt; fix the data "
                   f"(`python -m gpt2lab verify DIR` names every bad shard), then resume with: "
                   f"{python_command()} -m gpt2lab train --out-dir {out} --resume\n")
    second.write_bytes(good)
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress"]) == 0
    assert main(short_args(str(data), tmp_path / "straight", *flags)) == 0
    assert train_records(out) == train_records(tmp_path / "straight")


@pytest.mark.slow
def test_torch_save_runtime_error_stops_like_a_full_disk(shakespeare, tmp_path, monkeypatch):
    real_save = torch.save

    def unexpected_pos_at_step_6(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 6:
            raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 9472 vs 9360")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", unexpected_pos_at_step_6)
    with pytest.raises(RunStopped, match=r"could not write the checkpoint of step 6 in .*: torch.save could not write "
                                         r"it \(.*unexpected pos 9472 vs 9360\); the previous checkpoint "
                                         r".*step_000003.pt is intact; make room, then resume with"):
        train(tiny(shakespeare, val_every=0, sample_every=0), tmp_path, progress=False, echo=False)
    assert checkpoint.saved_steps(tmp_path) == [3]


@pytest.mark.slow
def test_a_torn_last_log_line_is_dropped_on_resume(shakespeare, tmp_path, capsys):
    cfg = tiny(shakespeare, val_every=0, sample_every=0)
    train(tiny(shakespeare, val_every=0, sample_every=0, stop_after=3), tmp_path, progress=False, echo=False)
    with open(tmp_path / "log.jsonl", "ab") as f:
        f.write(b'{"type": "train", "step": 3, "loss": 7.1, "l')  # the disk filled up mid-line
    assert [r["step"] for r in read_log(tmp_path)] == [0, 1, 2]  # reading skips it too
    capsys.readouterr()
    train(cfg, tmp_path, resume=True, progress=False, echo=False)
    assert capsys.readouterr().err == (f"gpt2lab: dropped the torn last line of {tmp_path / 'log.jsonl'} (44 bytes, "
                                       "cut short when it was written, e.g. by a full disk)\n")
    assert [r["step"] for r in read_log(tmp_path)] == list(range(6))
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]  # damage before the last line is not a torn write: one clear error
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"log.jsonl, line 2, is not a JSON record"):
        train(cfg, tmp_path, resume=True, progress=False, echo=False)


@pytest.mark.slow
def test_resume_on_changed_data_is_refused_in_one_line(shakespeare, tmp_path, capsys):
    import numpy as np

    from gpt2lab.engine import data

    shards = tmp_path / "shards"
    shutil.copytree(shakespeare, shards)
    out = tmp_path / "run"
    assert main(short_args(str(shards), out, "--stop-after", "4")) == 0
    manifest = data.read_manifest(shards)  # the folder is prepared again from other text
    tokens = np.fromfile(shards / manifest["shards"][1]["file"], dtype=np.uint16)
    manifest["shards"][1] = data.write_shard(shards, 1, tokens[::-1].copy())
    data.write_manifest(shards, manifest)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {shards} is not the data the checkpoint was trained on" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_keep_checkpoints_prunes_the_oldest(shakespeare, tmp_path):
    train(tiny(shakespeare, checkpoint_every=1, keep_checkpoints=2), tmp_path, progress=False, echo=False)
    assert checkpoint.saved_steps(tmp_path) == [5, 6] and checkpoint.load(tmp_path)["step"] == 6


@pytest.mark.slow
def test_deterministic_on_cpu_changes_nothing(shakespeare, tmp_path):
    train(tiny(shakespeare, max_steps=3), tmp_path / "plain", progress=False, echo=False)
    train(tiny(shakespeare, max_steps=3, deterministic=True), tmp_path / "det", progress=False, echo=False)
    assert train_records(tmp_path / "det") == train_records(tmp_path / "plain")
    assert json.loads((tmp_path / "det" / "run.json").read_text())["config"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()  # process-global: restored after the run


def worker_pids(launcher_pid):
    """{rank: pid} of the processes torchrun started (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher_pid:
                env = (stat.parent / "environ").read_bytes().split(b"\0")
                rank = next(int(v[5:]) for v in env if v.startswith(b"RANK="))
                found[rank] = int(stat.parent.name)
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
def test_sigterm_to_one_ddp_rank_stops_every_rank_with_one_checkpoint(shakespeare, tmp_path):
    out = tmp_path / "ddp"
    args = ["train", "--preset", "smoke", "--data", shakespeare, "--batch-size", "2", "--seq-len", "32",
            "--total-batch", "128", "--max-steps", "5000", "--checkpoint-every", "0", "--val-every", "10",
            "--sample-every", "0", "--no-progress"]
    proc = torchrun([*args, "--out-dir", str(out)], extra=["--standalone"])
    wait_for_steps(proc, out, 5)
    ranks = worker_pids(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGTERM)  # only rank 1 hears it: the ranks must agree to stop
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    step = checkpoint.load(out)["step"]
    assert len(read_log(out)) == step
    command = f"torchrun --standalone --nproc_per_node=2 -m gpt2lab train --out-dir {out} --resume"
    line = (f"gpt2lab train: error: stopped by SIGTERM at step {step}; checkpoint {out}/step_{step:06d}.pt; "
            f"resume with: {command}")
    assert output.count(line) == 2, output  # each rank says the same
    resumed = torchrun(["train", "--out-dir", str(out), "--resume", "--no-progress", "--stop-after", "4"],
                       extra=["--standalone"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    straight = torchrun([*args, "--out-dir", str(tmp_path / "straight"), "--stop-after", str(step + 4)],
                        extra=["--standalone"])
    assert straight.wait(timeout=300) == 0, straight.communicate()
    assert train_records(out) == train_records(tmp_path / "straight")
    assert [r[0] for r in train_records(out)] == list(range(step + 4))


@pytest.mark.slow
def test_a_checkpoint_of_another_model_shape_is_refused_naming_both(shakespeare, tmp_path):
    train(tiny(shakespeare, max_steps=2, stop_after=1), tmp_path, progress=False, echo=False)
    path = checkpoint.latest(tmp_path)
    state = torch.load(path, weights_only=True)
    state["model_config"]["n_layer"] = 3  # e.g. the model preset was redefined since the run started
    checkpoint.save(state, tmp_path)  # saved again with its hash (an edit in place is refused as damage)
    with pytest.raises(UserError, match=f"the checkpoint in {tmp_path} holds a model with n_layer=3; "
                                        "--model cpu-tiny now builds n_layer=2"):
        train(tiny(shakespeare, max_steps=2), tmp_path, resume=True, progress=False, echo=False)
