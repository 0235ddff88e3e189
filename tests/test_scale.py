import dataclasses

import pytest

from gpt2lab.run.config import PRESETS as TRAIN_PRESETS
from gpt2lab.engine.model import SHAPES
from gpt2lab.lessons.scale import SCALES, pick_scale


def test_env_var_forces_the_scale():
    s = pick_scale({"GPT2LAB_SCALE": "smoke"})
    assert s.name == "smoke" and "set by GPT2LAB_SCALE" in s.describe()


def test_default_follows_the_hardware(monkeypatch):
    import torch

    from gpt2lab.base import hardware as bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: ["avx512_bf16"])
    s = pick_scale({})
    assert s.name == "cpu" and s.reason == "no CUDA device found" and "autocast" not in s.train_overrides
    with pytest.raises(ValueError, match="needs a CUDA device"):
        pick_scale({"GPT2LAB_SCALE": "gpu"})


def test_cpu_scale_trains_in_fp32_without_bf16_instructions(monkeypatch):
    from gpt2lab.base import hardware as bench

    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: [])
    s = pick_scale({"GPT2LAB_SCALE": "cpu"})
    assert s.train_overrides == {"autocast": "none"} and "training in fp32" in s.reason
    assert pick_scale({"GPT2LAB_SCALE": "smoke"}).train_overrides == {}


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="choose one of gpu, cpu, smoke"):
        pick_scale({"GPT2LAB_SCALE": "huge"})


@pytest.mark.parametrize("name", list(SCALES))
def test_scales_name_real_presets(name):
    s = SCALES[name]
    assert s.train_preset in TRAIN_PRESETS and s.bench_preset in SHAPES
    assert TRAIN_PRESETS[s.train_preset].device == s.device


from gpt2lab.lessons.scale import LEAST_STEPS, fit_to_budget, seconds_per_step  # noqa: E402
from gpt2lab.run.config import get_preset  # noqa: E402


def test_a_fast_machine_runs_the_preset_and_a_slow_one_what_fits():
    cfg = get_preset("cpu-tiny-shakespeare")
    assert fit_to_budget(cfg, per_step_s=0.1, budget_s=180) is cfg  # 1,600 x 0.1 s fit in 180 s
    slow = fit_to_budget(cfg, per_step_s=0.4, budget_s=180)
    assert slow.max_steps == 450 and slow.val_every == 56 and slow.log_every == 56
    assert slow.checkpoint_every == slow.sample_every == 450 and slow.warmup_steps == cfg.warmup_steps
    changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(slow, f.name)}
    assert changed == {"max_steps", "val_every", "log_every", "sample_every", "checkpoint_every"}
    slow.validate()
    assert fit_to_budget(cfg, per_step_s=10.0).max_steps == LEAST_STEPS  # never below the floor


def test_seconds_per_step_measures_the_config_s_own_step():
    cfg = get_preset("smoke")
    small, wide = seconds_per_step(cfg, steps=2), seconds_per_step(dataclasses.replace(cfg, batch_size=cfg.batch_size * 8, total_batch=cfg.total_batch * 8), steps=2)
    assert 0 < small < wide  # 8x the tokens per step: measurably slower
