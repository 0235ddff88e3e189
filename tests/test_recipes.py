"""Past GPT-2's recipe: each idea does what it says, `gpt2` is the old model bit for bit, `modern` trains, and a run
keeps its recipe (saved, resumed only with the same one, loaded for sampling)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.base.errors import UserError
from gpt2lab.engine.knobs import Knobs, build
from gpt2lab.engine.model import GPT, GPTConfig, ReLU2, Rotary
from gpt2lab.engine.optim import MuonAdamW, OptimConfig, make_optimizer
from gpt2lab.engine.recipes import IDEAS, RECIPES, canonical, get_recipe
from gpt2lab.engine.step import train_step

SMALL = dict(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=16)


def model(*ideas: str, **kw) -> GPT:
    return GPT(GPTConfig(**SMALL, **get_recipe(",".join(ideas) or "gpt2").model, **kw))


def tokens(B=2, T=16, seed=1):
    return torch.randint(0, SMALL["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ the registry

def test_every_idea_is_a_complete_record_of_real_fields():
    model_fields = {f.name for f in dataclasses.fields(GPTConfig)}
    optim_fields = {f.name for f in dataclasses.fields(OptimConfig)}
    for name, idea in IDEAS.items():
        assert idea.name == name and idea.change and idea.why and idea.source, name
        assert idea.model or idea.optim, name
        assert set(idea.model) <= model_fields and set(idea.optim) <= optim_fields, name
        assert all(getattr(GPTConfig(), k) != v for k, v in idea.model.items()), f"{name} changes nothing"
    assert "record 2" in IDEAS["rope"].source and "45 -> 31.4" in IDEAS["rope"].source
    assert "record 3" in IDEAS["muon"].source and "Zhang & Sennrich" in IDEAS["rmsnorm"].source


def test_recipes_gpt2_modern_and_comma_lists():
    assert get_recipe("gpt2").model == {} and get_recipe("gpt2").optim == {}
    assert get_recipe("modern").ideas == tuple(IDEAS) == RECIPES["modern"]
    both = get_recipe("relu2, rope")
    assert both.ideas == ("rope", "relu2") and both.model == {"rope": True, "mlp_act": "relu2"}
    assert get_recipe("muon").optim == {"muon": True}
    assert canonical("relu2,rope") == canonical("rope,relu2") == "rope,relu2"
    assert canonical(",".join(IDEAS)) == "modern"


@pytest.mark.parametrize("spec", ["nope", "rope,nope", "", "rope,,relu2"])
def test_an_unknown_recipe_is_one_line_listing_the_valid_names(spec):
    with pytest.raises(UserError) as e:
        get_recipe(spec)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"unknown recipe {spec!r}")
    assert all(name in text for name in [*RECIPES, *IDEAS])


# --------------------------------------------------------------------------------------- gpt2: the old model

def test_the_gpt2_recipe_is_the_old_model_bit_for_bit():
    """Values computed with the model as it was before the recipes existed (commit b943795), in float64: the
    same seed gives the same weights (the new fields draw no random numbers when off) and the same outputs."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**SMALL, **get_recipe("gpt2").model)).double()
    idx = tokens()
    logits, loss = m(idx, idx.roll(-1, 1))
    assert loss.item() == pytest.approx(4.160596563289771, abs=1e-12)
    assert logits[0, -1, :3].tolist() == pytest.approx(
        [-0.0031841484483933094, -0.01556248036517299, 0.06974016850014539], abs=1e-12)
    assert logits.abs().sum().item() == pytest.approx(138.32327696193144, abs=1e-9)
    assert list(m.state_dict())[:2] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert m.lm_head.weight is m.transformer.wte.weight and GPTConfig(**SMALL).not_gpt2() == []


# ------------------------------------------------------------------------------------------------ each idea

def rotated_at(rotary: Rotary, x: torch.Tensor, t: int) -> torch.Tensor:
    """The vector x (head_dim,) as Rotary turns it at position t."""
    seq = torch.zeros(1, t + 1, 2, 3, x.numel(), dtype=x.dtype)  # (B, T, queries and keys, heads, head_dim)
    seq[0, t, 1, 2] = x
    return rotary(seq)[0, t, 1, 2]


def test_rope_scores_depend_only_on_relative_position():
    rotary = Rotary(head_dim=16, block_size=64).double()
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    score = lambda t, s: rotated_at(rotary, q, t) @ rotated_at(rotary, k, s)  # noqa: E731
    for t, s in [(3, 1), (9, 2), (20, 20)]:
        for shift in (1, 7, 40):
            assert score(t + shift, s + shift).item() == pytest.approx(score(t, s).item(), rel=1e-6)  # float32 tables
    assert abs(score(3, 1).item() - score(3, 2).item()) > 1e-3  # the distance itself matters
    assert rotated_at(rotary, q, 0).allclose(q)  # position 0 is no rotation
    assert rotated_at(rotary, q, 5).norm().item() == pytest.approx(q.norm().item())  # a rotation keeps the norm


def test_rope_replaces_the_position_table():
    m = model("rope")
    assert "wpe" not in m.transformer and not any("wpe" in k or "rotary" in k for k in m.state_dict())
    assert m.num_params() == model().num_params() - SMALL["block_size"] * SMALL["n_embd"]
    logits, _ = m(tokens())
    assert logits.shape == (2, 16, SMALL["vocab_size"])


def test_rmsnorm_output_has_unit_rms_and_no_bias():
    m = model("rmsnorm")
    norm = m.transformer.h[0].ln_1
    assert isinstance(norm, torch.nn.RMSNorm) and torch.equal(norm.weight, torch.ones(SMALL["n_embd"]))
    x = torch.randn(4, 16) * 5 + 3
    rms = norm(x).pow(2).mean(-1).sqrt()
    assert rms.allclose(torch.ones(4), atol=1e-4)
    assert not any(k.endswith(("ln_1.bias", "ln_2.bias", "ln_f.bias")) for k in m.state_dict())


def spy_attention(monkeypatch) -> list:
    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.detach(), k.detach()))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("ideas", [("qknorm",), ("qknorm", "rope")])
def test_qknorm_gives_every_query_and_key_row_unit_rms(monkeypatch, ideas):
    seen = spy_attention(monkeypatch)
    model(*ideas)(tokens())
    assert len(seen) == SMALL["n_layer"]
    for q, k in seen:
        for t in (q, k):
            assert t.pow(2).mean(-1).sqrt().allclose(torch.ones(()), atol=1e-4)
    seen.clear()
    model()(tokens())
    assert not seen[0][0].pow(2).mean(-1).sqrt().allclose(torch.ones(()), atol=1e-2)  # without it, not so


def test_relu2_is_relu_squared_in_the_mlp():
    x = torch.randn(1000)
    assert torch.equal(ReLU2()(x), F.relu(x) ** 2)
    m = model("relu2")
    assert isinstance(m.transformer.h[0].mlp.relu2, ReLU2) and not hasattr(m.transformer.h[0].mlp, "gelu")


def test_zeroinit_starts_every_block_as_the_identity():
    m = model("zeroinit")
    for block in m.transformer.h:
        assert block.attn.c_proj.weight.abs().max() == 0 and block.mlp.c_proj.weight.abs().max() == 0
        x = torch.randn(2, 16, SMALL["n_embd"])
        assert torch.equal(block(x), x)
    idx = tokens()
    t = m.transformer
    embedded = t.ln_f(t.wte(idx) + t.wpe(torch.arange(idx.size(1))))
    assert torch.equal(m.features(idx), embedded)  # the residual stream is the embeddings, untouched
    # the other weights draw the same numbers as without zeroinit
    torch.manual_seed(3)
    plain = model()
    torch.manual_seed(3)
    zero = model("zeroinit")
    assert torch.equal(plain.transformer.h[1].mlp.c_fc.weight, zero.transformer.h[1].mlp.c_fc.weight)


def test_zeroinit_with_an_untied_head_predicts_uniformly_at_first():
    _, loss = model("zeroinit", "untied")(tokens(), tokens(seed=2))
    assert loss.item() == pytest.approx(math.log(SMALL["vocab_size"]), abs=1e-6)


def test_untied_head_is_its_own_matrix():
    m = model("untied")
    assert m.lm_head.weight is not m.transformer.wte.weight
    assert m.num_params() == model().num_params() + SMALL["vocab_size"] * SMALL["n_embd"]
    _, loss = m(tokens(), tokens(seed=2))
    loss.backward()
    assert not torch.equal(m.lm_head.weight.grad, m.transformer.wte.weight.grad)
    assert "lm_head.weight" in m.state_dict() and m.config.not_gpt2() == ["tie_head"]


def test_embnorm_normalizes_the_embeddings():
    m = model("embnorm", "rope")
    idx = tokens()
    assert torch.equal(m.features(idx), m.transformer.ln_f(
        m.transformer.h[1](m.transformer.h[0](m.transformer.ln_e(m.transformer.wte(idx))))))


def test_softcap_bounds_every_logit_even_from_a_huge_head():
    m = model("softcap")
    for scale in (1, 10, 1000):
        with torch.no_grad():
            m.lm_head.weight.mul_(scale)
        logits, _ = m(tokens())
        assert logits.abs().max() <= 30  # float32's tanh reaches 1 exactly when far out: <= the cap, not <
    uncapped = F.linear(m.features(tokens()), m.lm_head.weight)
    assert uncapped.abs().max() > 1000 and logits.abs().max() > 29  # the same head uncapped: far beyond
    chunked = GPT(dataclasses.replace(m.config, loss="chunked"))
    chunked.load_state_dict(m.state_dict())
    idx, y = tokens(), tokens(seed=2)
    assert chunked(idx, y)[1].item() == pytest.approx(m(idx, y)[1].item())  # the fused loss gives way to the cap


def test_muon_splits_hidden_matrices_from_the_rest():
    m = model("untied")
    opt, report = make_optimizer(m, OptimConfig(muon=True), fused=False, device_type="cpu")
    assert isinstance(opt, MuonAdamW)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(names[i] for i in muon) == sorted(
        n for n, p in m.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2)
    assert len(muon) == 4 * SMALL["n_layer"] == report.muon_tensors
    rest = [names[id(p)] for g in opt.adamw.param_groups for p in g["params"]]
    assert {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"} <= set(rest)
    assert len(muon) + len(rest) == len(names) and "Muon on 8 hidden matrices" in str(report)
    decay, no_decay = opt.adamw.param_groups
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0


def test_one_muon_step_is_orthogonalised():
    """The update of a matrix has (nearly) equal singular values, whatever the gradient's spread."""
    layer = torch.nn.Linear(32, 64, bias=False)
    opt = torch.optim.Muon([layer.weight], lr=0.01, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    u, _, v = torch.linalg.svd(torch.randn(64, 32), full_matrices=False)
    layer.weight.grad = u @ torch.diag(torch.logspace(0, -2, 32)) @ v  # singular values from 1 to 0.01
    before = layer.weight.detach().clone()
    opt.step()
    s = torch.linalg.svdvals(before - layer.weight.detach())
    # from a spread of 100 to under 2: torch's five quintic Newton-Schulz steps aim for speed, not exactly 1, and
    # leave every singular value in a band around it (1.68 measured here)
    assert s.max() / s.min() < 2
    assert s.mean().item() == pytest.approx(0.01 * 0.2 * math.sqrt(64), rel=0.3)  # AdamW's RMS scale


# -------------------------------------------------------------------------- GPT-2's weights need GPT-2's shape

@pytest.mark.parametrize("ideas", [("rope",), ("untied",), ("rmsnorm",), ("relu2", "softcap")])
def test_gpt2_weights_are_refused_by_a_changed_architecture(ideas):
    with pytest.raises(ValueError) as e:
        model(*ideas).load_hf_state_dict({})
    assert "\n" not in str(e.value) and "GPT-2's weights fit GPT-2's architecture only" in str(e.value)
    assert all(f in str(e.value) for f in GPTConfig(**SMALL, **get_recipe(",".join(ideas)).model).not_gpt2())


def test_zeroinit_and_muon_keep_gpt2_weights_loadable():
    assert GPTConfig(**SMALL, **get_recipe("zeroinit,muon").model).not_gpt2() == []


# ---------------------------------------------------------------------------------------------------- training

@pytest.mark.slow
def test_modern_trains():
    cfg = GPTConfig(**SMALL, **get_recipe("modern").model)
    optim = OptimConfig(max_lr=3e-3, warmup_steps=2, max_steps=40, **get_recipe("modern").optim)
    built = build(Knobs(), cfg, "cpu", optim, seed=0)
    assert isinstance(built.optimizer, MuonAdamW)
    x = tokens(B=4)
    batch = lambda: (x, x.roll(-1, 1))  # noqa: E731
    losses = [train_step(built, batch, lr=3e-3).loss.item() for _ in range(40)]
    assert losses[0] == pytest.approx(math.log(SMALL["vocab_size"]), abs=1e-5)  # zero head: uniform at first
    assert losses[-1] < losses[0] - 1.0


# ------------------------------------------------------------------------------------- a run keeps its recipe

@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    from gpt2lab.engine.prepare import prepare

    folder = tmp_path_factory.mktemp("shards")
    prepare("tinyshakespeare", folder, shard_size=33_800, workers=1, progress=False)
    return str(folder)


def run_args(data, out, *extra):
    return ["train", "--preset", "smoke", "--data", data, "--batch-size", "2", "--seq-len", "32", "--total-batch",
            "64", "--max-steps", "4", "--val-every", "2", "--val-steps", "1", "--sample-every", "0",
            "--checkpoint-every", "2", "--no-progress", "--out-dir", str(out), *extra]


@pytest.mark.slow
def test_a_run_saves_its_recipe_refuses_another_on_resume_and_loads_for_sampling(shakespeare, tmp_path, capsys):
    import json

    from gpt2lab.cli.main import main
    from gpt2lab.run import checkpoint
    from gpt2lab.run.sample import sample

    out = tmp_path / "run"
    assert main(run_args(shakespeare, out, "--recipe", "relu2,rope,muon", "--stop-after", "2")) == 0
    assert "recipe relu2,rope,muon" in capsys.readouterr().out
    state = checkpoint.peek(checkpoint.latest(out))
    assert state["train_config"]["recipe"] == "relu2,rope,muon"
    assert state["model_config"]["rope"] and state["model_config"]["mlp_act"] == "relu2"
    assert json.loads((out / "run.json").read_text())["config"]["recipe"] == "relu2,rope,muon"
    assert "Muon on" in json.loads((out / "run.json").read_text())["decay"]
    for other in ("gpt2", "modern", "rope,relu2"):
        assert main(["train", "--out-dir", str(out), "--resume", "--no-progress", "--recipe", other]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"gpt2lab train: error: --recipe {other} would change the run being resumed, which was started with "
            "--recipe relu2,rope,muon"), err
    # the same recipe spelled in another order is the same recipe; a plain --resume keeps it
    assert main(["train", "--out-dir", str(out), "--resume", "--no-progress", "--recipe", "muon, rope,relu2"]) == 0
    assert checkpoint.peek(checkpoint.latest(out))["step"] == 4
    m = checkpoint.load_model(out)
    assert m.config.rope and "wpe" not in m.transformer
    assert sample(m, "ROMEO:", tokens=3, seed=0)[0].startswith("ROMEO:")
    assert checkpoint.load_model(out).config.mlp_act == "relu2"  # what `hellaswag --checkpoint` loads


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["gpt2", *IDEAS, "modern"])
def test_every_recipe_trains_resumes_bit_exactly_samples_and_scores_hellaswag(recipe, shakespeare, tmp_path, capsys):
    import json

    from gpt2lab.cli.main import main
    from gpt2lab.run import checkpoint, hellaswag
    from gpt2lab.run.train import read_log

    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert main(run_args(shakespeare, straight, "--recipe", recipe)) == 0
    assert main(run_args(shakespeare, pieces, "--recipe", recipe, "--stop-after", "2")) == 0
    assert checkpoint.peek(checkpoint.latest(pieces))["step"] == 2
    assert main(["train", "--out-dir", str(pieces), "--resume", "--no-progress"]) == 0
    records = lambda out: [(r["step"], r["loss"], r["lr"]) for r in read_log(out)]  # noqa: E731
    assert records(pieces) == records(straight) and len(records(straight)) == 4  # bit for bit on CPU
    a, b = checkpoint.load_model(straight).state_dict(), checkpoint.load_model(pieces).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()

    assert main(["sample", "--checkpoint", str(pieces), "--prompt", "ROMEO:", "--tokens", "3", "--num-samples",
                 "1"]) == 0
    assert "ROMEO:" in capsys.readouterr().out
    result = tmp_path / "hellaswag.json"
    assert main(["hellaswag", "--checkpoint", str(pieces), "--data", str(hellaswag.sample_path()), "--limit", "4",
                 "--device", "cpu", "--json", str(result)]) == 0
    scored = json.loads(result.read_text())
    assert scored["n"] == 4 and 0 <= scored["correct_norm"] <= 4


def test_the_cli_refuses_an_unknown_recipe_in_one_line(tmp_path, capsys):
    from gpt2lab.cli.main import main

    assert main(["train", "--preset", "smoke", "--recipe", "rope,fast", "--out-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpt2lab train: error: --recipe must be gpt2 or modern or a comma "
                                                   "list of ideas from: rope, rmsnorm"), err
    assert err.rstrip().endswith("got 'rope,fast'") and not (tmp_path / "r").exists()


def test_gpt2_weights_from_a_hugging_face_folder_refuse_a_recipe(tmp_path):
    from gpt2lab.engine.pretrained import load_gpt2, random_hf_gpt2

    random_hf_gpt2(vocab_size=64, n_positions=16, n_layer=1, n_head=2, n_embd=16).save_pretrained(tmp_path)
    assert load_gpt2(tmp_path).config.not_gpt2() == []
    with pytest.raises(ValueError, match="GPT-2's weights fit GPT-2's architecture only, and this model changes rope"):
        load_gpt2(tmp_path, rope=True)


# ------------------------------------------------------------------------------- the benchmark's bookkeeping

def bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recipes.py"
    spec = importlib.util.spec_from_file_location("bench_recipes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_measures_tokens_and_seconds_to_gpt2s_final_loss(tmp_path):
    import json

    bench = bench_module()
    log = [{"type": "train", "step": s, "loss": 5.0, "ms": 1000.0} for s in range(4)]
    log += [{"type": "val", "step": s, "val_loss": v} for s, v in [(0, 9.0), (2, 6.0), (3, 5.0)]]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    points = bench.curve(tmp_path, tokens_per_step=100)
    assert points == [[0, 0, 9.0, 0.0], [2, 200, 6.0, 2.0], [3, 300, 5.0, 3.0]]  # training seconds before each
    assert bench.reach(points, 6.5) == [2, 200, 6.0, 2.0] and bench.reach(points, 1.0) is None
    runs = [{"canonical": "gpt2", "final_val": 6.0, "wall_s": 1.0, "val": [[0, 0, 9.0, 0.0], [4, 400, 6.0, 4.0]]},
            {"canonical": "gpt2", "final_val": 5.0, "wall_s": 1.0, "val": [[0, 0, 9.0, 0.0], [4, 400, 5.0, 4.0]]},
            {"canonical": "modern", "final_val": 4.0, "wall_s": 2.0, "val": points},
            {"canonical": "modern", "final_val": 7.0, "wall_s": 2.0, "val": [[0, 0, 9.0, 0.0], [4, 400, 7.0, 4.0]]}]
    gpt2, modern = bench.summarize(runs)
    assert gpt2["target"] == 5.5 and gpt2["reached"] == 1 and gpt2["tokens"]["median"] == 400
    assert modern["reached"] == 1 and modern["tokens"] == {"median": 300, "min": 300, "max": 300}
    assert modern["train_s"]["median"] == 3.0 and "modern" in bench.report([gpt2, modern])


def test_each_benchmark_run_records_its_hardware_and_load(monkeypatch):
    import argparse
    import json
    import os
    from pathlib import Path

    bench = bench_module()

    def fake_train(cfg, out_dir, **kw):
        log = [{"type": "train", "step": 0, "loss": 5.0, "ms": 10.0}, {"type": "val", "step": 1, "val_loss": 4.0}]
        (Path(out_dir) / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))

    monkeypatch.setattr(bench, "train", fake_train)
    run = bench.one_run("gpt2", 0, argparse.Namespace(preset=bench.PRESET, steps=2, val_every=1, val_steps=1,
                                                      autocast=None))
    assert run["hardware"]["device"] == "cpu" and run["hardware"]["cpu_count"] == os.cpu_count()
    assert len(run["load_avg"]) == 2 and all(x >= 0 for x in run["load_avg"])
    assert run["final_val"] == 4.0 and run["step_ms"] == 10.0  # one step: nothing to leave out


def test_the_benchmark_times_a_step_without_the_first_and_compares_it_with_gpt2s(tmp_path):
    import json

    bench = bench_module()
    log = [{"type": "train", "step": s, "loss": 5.0, "ms": ms} for s, ms in enumerate([900.0, 10.0, 30.0, 20.0])]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert bench.step_ms(tmp_path) == 20.0  # the warm-up step's 900 ms is not a step's time
    run = lambda label, seed, ms: {"canonical": label, "label": label, "seed": seed, "final_val": 5.0,  # noqa: E731
                                   "wall_s": 1.0, "step_ms": ms, "val": [[4, 400, 5.0, 4.0]]}
    runs = [run("gpt2", 0, 100.0), run("gpt2", 1, 120.0), run("gpt2", 2, 110.0),
            run("modern", 0, 130.0), run("modern", 1, 160.0), run("modern", 2, 121.0)]
    gpt2, modern = bench.summarize(runs)
    assert gpt2["step_ratio"]["median"] == 1.0 and modern["step_ms"] == {"median": 130.0, "min": 121.0, "max": 160.0}
    # seed by seed: 1.3, 1.333 and 1.1, not the ratio of the medians (130 / 110 = 1.18)
    assert modern["step_ratio"] == {"median": 1.3, "min": 1.1, "max": 160.0 / 120.0}
    assert "1.30 [1.10-1.33]" in bench.report([gpt2, modern])


def test_the_ablation_adds_each_idea_alone_and_removes_each_from_modern():
    from gpt2lab.engine.recipes import IDEAS, canonical

    bench = bench_module()
    labelled = dict(bench.ablation_recipes())
    assert len(labelled) == 2 + 2 * len(IDEAS)
    assert canonical(labelled["gpt2"]) == "gpt2" and canonical(labelled["modern"]) == "modern"
    for idea in IDEAS:
        assert canonical(labelled[f"+{idea}"]) == idea
        assert set(canonical(labelled[f"modern -{idea}"]).split(",")) == set(IDEAS) - {idea}
    # summaries are named by the run's label (`+rope`, not the canonical `rope`); the target is still gpt2's
    runs = [{"canonical": "gpt2", "label": "gpt2", "final_val": 6.0, "wall_s": 1.0, "val": [[4, 400, 6.0, 4.0]]},
            {"canonical": "rope", "label": "+rope", "final_val": 5.0, "wall_s": 1.0, "val": [[4, 400, 5.0, 4.0]]}]
    assert [s["recipe"] for s in bench.summarize(runs)] == ["gpt2", "+rope"]
    assert bench.summarize(runs)[1]["target"] == 6.0


def test_the_ablation_and_a_recipe_list_together_are_refused(capsys):
    import pytest

    bench = bench_module()
    with pytest.raises(SystemExit) as stop:
        bench.main(["--ablation", "--recipes", "gpt2,rope", "--json", ""])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_each_recipe_is_compared_with_its_reference_seed_by_seed():
    bench = bench_module()
    run = lambda label, seed, final: {"canonical": label, "label": label, "seed": seed, "final_val": final,  # noqa: E731
                                      "wall_s": 1.0, "val": [[4, 400, final, 4.0]]}
    runs = [run("gpt2", 0, 6.0), run("gpt2", 1, 5.0), run("+rope", 0, 5.5), run("+rope", 1, 4.9),
            run("modern", 0, 4.0), run("modern", 1, 4.2), run("modern -rope", 0, 4.3), run("modern -rope", 1, 4.2)]
    by = {s["recipe"]: s for s in bench.summarize(runs)}
    assert by["gpt2"]["vs"] is None and by["gpt2"]["delta_val"] == {}
    assert by["+rope"]["vs"] == "gpt2"  # 5.5 - 6.0 and 4.9 - 5.0: paired by seed, not median minus median
    assert by["+rope"]["delta_val"]["min"] == -0.5 and abs(by["+rope"]["delta_val"]["max"] + 0.1) < 1e-12
    assert by["modern -rope"]["vs"] == "modern"
    assert abs(by["modern -rope"]["delta_val"]["median"] - 0.15) < 1e-12
    assert "vs modern" in bench.report(list(by.values()))


def test_an_interrupted_sweep_keeps_the_runs_it_finished(monkeypatch, tmp_path):
    import json

    bench = bench_module()
    done = []

    def one_run(recipe, seed, args):
        if len(done) == 2:
            raise KeyboardInterrupt  # the third run never ends
        done.append(recipe)
        return {"kind": "run", "recipe": recipe, "canonical": recipe, "seed": seed, "final_val": 5.0, "wall_s": 1.0,
                "val": [[1, 100, 5.0, 1.0]]}

    monkeypatch.setattr(bench, "one_run", one_run)
    out = tmp_path / "sweep.jsonl"
    import pytest
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--recipes", "gpt2,rope,muon", "--seeds", "1", "--json", str(out)])
    assert [json.loads(ln)["recipe"] for ln in out.read_text().splitlines()] == ["gpt2", "rope"]


def test_the_benchmark_trains_the_preset_it_is_given_and_refuses_an_unknown_one(monkeypatch, capsys, tmp_path):
    bench = bench_module()
    seen = []

    def one_run(recipe, seed, args):
        seen.append((args.preset, args.steps, args.val_steps))
        return {"kind": "run", "recipe": recipe, "canonical": recipe, "seed": seed, "final_val": 5.0, "wall_s": 1.0,
                "val": [[1, 100, 5.0, 1.0]]}

    monkeypatch.setattr(bench, "one_run", one_run)
    assert bench.main(["--recipes", "gpt2", "--seeds", "1", "--preset", "smoke", "--json", ""]) == 0
    from gpt2lab.run.config import get_preset
    assert seen == [("smoke", get_preset("smoke").max_steps, get_preset("smoke").val_steps)]  # the preset's defaults
    written = []
    monkeypatch.setattr(bench, "append_json", lambda path, records: written.append(path))
    assert bench.main(["--recipes", "gpt2", "--seeds", "1", "--preset", "gpt2-124m-fineweb10b"]) == 0
    assert set(written) == {"results/recipes-gpu.jsonl"}  # a GPU preset's sweep does not land in the CPU file
    assert bench.main(["--recipes", "gpt2", "--preset", "nope", "--json", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown preset 'nope'" in err[0]
