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
