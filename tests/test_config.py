"""run/config.py: presets, the one validation of a run's settings, gradient accumulation, what a resume may
change, and the help text read from the source."""

import dataclasses

import pytest

from gpt2lab.base.checks import flag
from gpt2lab.base.errors import UserError
from gpt2lab.run.config import (MAY_CHANGE_ON_RESUME, PRESETS, TrainConfig, choices, field_help, field_types,
                                get_preset, model_presets, resume_config, saved_config, shown)


def test_the_video_run_is_the_default_and_its_numbers_are_the_video_s():
    cfg = PRESETS["gpt2-124m-fineweb10b"]
    assert cfg == TrainConfig()
    assert cfg.total_batch == 2**19 == 524_288  # ~0.5M tokens per step (GPT-3 Small)
    assert cfg.grad_accum(world_size=1) == 8  # 64 x 1024 tokens per micro-batch
    assert cfg.grad_accum(world_size=8) == 1  # the video's 8 GPUs
    assert cfg.max_steps == 10**10 // 2**19 == 19_073  # one epoch of the 10B-token sample, in whole steps


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_divides_its_batch(name):
    cfg = get_preset(name)
    assert cfg.grad_accum(1) * cfg.batch_size * cfg.seq_len == cfg.total_batch


def test_overrides_and_unknown_names():
    assert get_preset("smoke", max_steps=3).max_steps == 3
    with pytest.raises(UserError, match="unknown preset 'huge'; available: gpt2-124m-fineweb10b"):
        get_preset("huge")
    with pytest.raises(UserError, match="unknown setting\\(s\\): max_stepz"):
        get_preset("smoke", max_stepz=3)


@pytest.mark.parametrize("field, value, problem", [
    ("max_lr", float("nan"), "must be a finite number"),
    ("max_lr", 0.0, "must be positive"),
    ("batch_size", 0, "must be positive"),
    ("warmup_steps", -1, "must be >= 0"),
    ("stop_after", 0, "must be positive"),
    ("min_lr_ratio", 1.5, "must be between 0 and 1"),
    ("dropout", 1.0, "must be at least 0 and below 1"),
    ("seed", 2**32, "must be between 0 and 2**32-1"),
    ("rung", "warp", "must be one of auto, fp32"),
    ("autocast", "fp8", "must be one of none, bf16, fp16"),
    ("model", "test", "must be one of gpt2"),  # the test shape's 512 tokens cannot hold GPT-2's vocabulary
])
def test_validate_names_the_flag_and_the_value(field, value, problem):
    cfg = dataclasses.replace(get_preset("smoke"), **{field: value})
    with pytest.raises(UserError) as e:
        cfg.validate(flag)
    assert str(e.value).startswith(f"{flag(field)} {problem}") and str(e.value).endswith(f"got {value!r}")


def test_a_resume_names_the_flag_as_typed():
    from gpt2lab.run.config import resume_config

    with pytest.raises(UserError, match=r"^--stop-after must be positive, got 0$"):
        resume_config(get_preset("smoke"), {"stop_after": 0})


def test_seq_len_is_checked_against_the_model_s_block_size():
    cfg = dataclasses.replace(get_preset("smoke"), seq_len=129)  # cpu-tiny has 128 positions
    with pytest.raises(UserError, match=r"--seq-len must be at most the block size of --model cpu-tiny \(128\), got 129"):
        cfg.validate(flag)
    dataclasses.replace(cfg, seq_len=128, total_batch=512).validate(flag)


def test_samples_need_a_prompt_unless_they_are_off():
    cfg = dataclasses.replace(get_preset("smoke"), sample_prompt="")
    with pytest.raises(UserError, match="--sample-prompt must not be empty while samples are on"):
        cfg.validate(flag)
    dataclasses.replace(cfg, sample_every=0).validate(flag)


def test_grad_accum_refuses_a_batch_that_does_not_divide():
    cfg = get_preset("smoke")  # 4 x 64 tokens per micro-batch, 512 per step
    assert cfg.grad_accum(1) == 2 and cfg.grad_accum(2) == 1
    with pytest.raises(UserError, match="--total-batch 512 is not divisible by --batch-size x --seq-len x processes "
                                        "= 4 x 64 x 3 = 768"):
        cfg.grad_accum(3, flag)


def test_a_resume_keeps_the_run_and_takes_only_bookkeeping():
    saved = get_preset("smoke", stop_after=4)
    cfg = resume_config(saved, {"val_every": 2, "max_lr": saved.max_lr, "stop_after": 6})
    assert cfg.val_every == 2 and cfg.stop_after == 6 and cfg.max_lr == saved.max_lr
    assert resume_config(saved, {}).stop_after is None  # belongs to one invocation
    with pytest.raises(UserError, match="--max-lr 0.5 would change the run being resumed, which was started with "
                                        "--max-lr 0.001"):
        resume_config(saved, {"max_lr": 0.5})
    # what a resume may set changes nothing that is computed
    assert not MAY_CHANGE_ON_RESUME & {"model", "data", "batch_size", "seq_len", "total_batch", "max_lr", "seed",
                                       "rung", "compile", "autocast", "dropout", "max_steps"}


def test_a_checkpoint_s_settings_load_with_new_fields_defaulted_and_unknown_ones_refused():
    fields = dataclasses.asdict(get_preset("smoke"))
    del fields["dropout"]  # a checkpoint written before the field existed
    assert saved_config(fields).dropout == TrainConfig.dropout
    with pytest.raises(UserError, match="include flux_capacitor, unknown to this gpt2lab"):
        saved_config({**fields, "flux_capacitor": 1})


def test_types_choices_and_help_come_from_the_dataclass():
    types = field_types()
    assert types["stop_after"] is int and types["compile"] is bool and types["autocast"] is str
    assert set(types) == {f.name for f in dataclasses.fields(TrainConfig)}
    helps = field_help()
    assert set(helps) == set(types)  # every setting has a --help line
    assert helps["seed"] == "initial weights and data order (0 to 2**32-1)"
    assert choices()["rung"][0] == "auto" and "fused_adamw" in choices()["rung"]
    assert set(model_presets()) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "cpu-small", "cpu-shakespeare",
                                    "cpu-tiny"}
    assert shown(None) == "none" and shown(True) == "true" and shown(3) == "3"
