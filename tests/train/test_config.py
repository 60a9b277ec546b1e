"""Tests of kdlens.config (TOML files, key=value overrides, type checks, ranges, choices, unknown and
missing keys) on a small stand-alone config class, and of TrainConfig's own rules and presets.
Run: ``python -m pytest tests/train/test_config.py -q``."""

from dataclasses import dataclass

import pytest

from kdlens.config import (from_dict, load_config, load_toml, option, parse_override, to_dict,
                           with_overrides)
from kdlens.errors import KdlensError


@dataclass(frozen=True)
class Demo:
    name: str = option(help="a required string")
    steps: int = option(10, help="an integer in [1, 100]", range=(1, 100))
    rate: float = option(0.5, help="a number in [0, 1]", range=(0.0, 1.0))
    flag: bool = option(False, help="a boolean")
    limit: int | None = option(None, help="an optional integer >= 0", range=(0, None))
    kind: str = option("a", help="one of a, b", choices=("a", "b"))
    targets: tuple[str, ...] = option(("x", "y"), help="a list of strings")
    extra: dict = option(default_factory=dict, help="a table")


def test_toml_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "run"\nsteps = 20\nrate = 0.25\ntargets = ["q"]\n[extra]\nk = 1\n')
    cfg = load_config(Demo, path, ["steps=30", "flag=true", "limit=none", "kind=b", "targets=['a', 'b']"])
    assert cfg == Demo(name="run", steps=30, rate=0.25, flag=True, limit=None, kind="b", targets=("a", "b"),
                       extra={"k": 1})
    # base < file < overrides
    cfg = load_config(Demo, path, ["rate=1"], base={"name": "base", "steps": 5, "flag": True})
    assert (cfg.name, cfg.steps, cfg.rate, cfg.flag) == ("run", 20, 1.0, True)
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize("text,want", [
    ("steps=3", ("steps", 3)), ("rate=1e-4", ("rate", 1e-4)), ("flag=false", ("flag", False)),
    ("targets=[1, 2]", ("targets", [1, 2])), ("limit=None", ("limit", None)), ("limit=null", ("limit", None)),
    ("name=models/s1", ("name", "models/s1")), ("name = spaced ", ("name", "spaced")),
    ("name=a=b", ("name", "a=b")), ('name="3"', ("name", "3")),
])
def test_parse_override_reads_toml_values_and_falls_back_to_strings(text, want):
    assert parse_override(text) == want


def test_malformed_overrides():
    with pytest.raises(KdlensError, match="key=value"):
        parse_override("steps")
    with pytest.raises(KdlensError, match="empty key"):
        parse_override("=3")
    assert with_overrides({"steps": 1, "name": "x"}, ["steps=2", "steps=4"]) == {"steps": 4, "name": "x"}


@pytest.mark.parametrize("override,message", [
    ("steps=fast", "'steps' must be an integer"),
    ("steps=1.5", "'steps' must be an integer"),
    ("steps=true", "'steps' must be an integer"),  # a bool is not an integer here
    ("rate=fast", "'rate' must be a number"),
    ("flag=1", "'flag' must be true or false"),
    ("name=3", "'name' must be a string"),
    ("targets=3", "'targets' must be a list"),
    ("targets=[1]", r"'targets\[\]' must be a string"),
    ("extra=3", "'extra' must be a table"),
    ("name=none", "'name' must not be empty"),
    ("steps=0", r"'steps' = 0 is out of range \[1, 100\]"),
    ("steps=101", "out of range"),
    ("rate=-0.01", "'rate' = -0.01 is out of range"),
    ("limit=-1", r"'limit' = -1 is out of range \[0, None\]"),
    ("kind=c", "'kind' = 'c' is not one of a, b"),
])
def test_type_range_and_choice_errors_name_the_key(override, message):
    with pytest.raises(KdlensError, match=message):
        load_config(Demo, None, ["name=x", override])


def test_integral_floats_become_ints_and_bounds_are_inclusive():
    cfg = from_dict(Demo, {"name": "x", "steps": 100.0, "rate": 0, "limit": 0})
    assert cfg.steps == 100 and isinstance(cfg.steps, int)
    assert cfg.rate == 0.0 and isinstance(cfg.rate, float)
    # direct construction is validated too (frozen dataclass, __post_init__ of the caller)


def test_unknown_and_missing_keys(tmp_path):
    with pytest.raises(KdlensError, match=r"unknown key\(s\) stpes, zzz; known keys: .*steps"):
        from_dict(Demo, {"name": "x", "stpes": 3, "zzz": 1})
    with pytest.raises(KdlensError, match=r"missing required key\(s\) name"):
        from_dict(Demo, {"steps": 3})
    path = tmp_path / "bad.toml"
    path.write_text("steps = 3\nname = x\n")
    with pytest.raises(KdlensError, match="bad.toml: not valid TOML"):
        load_toml(path)
    with pytest.raises(KdlensError, match="no such config file"):
        load_toml(tmp_path / "missing.toml")
    path.write_text('name = "x"\nstepz = 3\n')
    with pytest.raises(KdlensError, match=r"bad.toml: unknown key\(s\) stepz"):
        load_config(Demo, path)


def test_to_dict_round_trip():
    cfg = Demo(name="x", targets=("a",), extra={"k": [1]})
    data = to_dict(cfg)
    assert data["targets"] == ["a"] and data["limit"] is None
    assert from_dict(Demo, data) == cfg


# --------------------------------------------------------------------------- TrainConfig

def _train_kw(**kw):
    return {"out_dir": "o", "data": "d.json", "student": "s", **kw}


def test_train_config_rules():
    from kdlens.train import TrainConfig

    with pytest.raises(KdlensError, match="mode='kd' needs a teacher"):
        TrainConfig(**_train_kw(mode="kd"))
    with pytest.raises(KdlensError, match="mode='sft' trains on the data alone"):
        TrainConfig(**_train_kw(teacher="t"))
    with pytest.raises(KdlensError, match="kd_weight=0 is SFT"):
        TrainConfig(**_train_kw(mode="kd", teacher="t", kd_weight=0.0))
    with pytest.raises(KdlensError, match="teacher_adapter needs teacher"):
        TrainConfig(**_train_kw(mode="kd", teacher_adapter="a"))
    with pytest.raises(KdlensError, match="'beta' = 1.0 is out of range"):
        TrainConfig(**_train_kw(mode="kd", teacher="t", beta=1.0))
    with pytest.raises(KdlensError, match="'objective' = 'kl' is not one of forward_kl"):
        TrainConfig(**_train_kw(mode="kd", teacher="t", objective="kl"))
    with pytest.raises(KdlensError, match="'max_steps' must be an integer"):
        TrainConfig.from_dict(_train_kw(max_steps="10"))
    cfg = TrainConfig.from_dict(_train_kw(lora_targets=["q_proj"]))
    assert cfg.lora_targets == ("q_proj",) and TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_presets_are_the_papers_settings_and_user_keys_win():
    """paper.md sections 3-4: LoRA r=8/alpha=16/dropout 0.05, lr 3e-4, 100 warm-up steps, micro-batch 4 x
    4 accumulation, max length 256, seed 6; SeqKD forward KL at T=2 with T^2, RevKD reverse KL at T=1,
    GKD JSD(0.5) at T=1 with on-policy rate 0.5."""
    from kdlens.train import TrainConfig

    seqkd = TrainConfig.from_preset("seqkd", **_train_kw(teacher="t"))
    assert (seqkd.mode, seqkd.objective, seqkd.temperature, seqkd.scale_by_t2) == ("kd", "forward_kl", 2.0, True)
    assert (seqkd.lora, seqkd.lora_r, seqkd.lora_alpha, seqkd.lora_dropout) == (True, 8, 16, 0.05)
    assert (seqkd.lr, seqkd.warmup_steps, seqkd.micro_batch_size, seqkd.grad_accum) == (3e-4, 100, 4, 4)
    assert (seqkd.max_length, seqkd.seed, seqkd.train_on_inputs) == (256, 6, True)
    revkd = TrainConfig.from_preset("revkd", **_train_kw(teacher="t"))
    assert (revkd.objective, revkd.temperature) == ("reverse_kl", 1.0)
    gkd = TrainConfig.from_preset("gkd", **_train_kw(teacher="t", temperature=1.5))
    assert (gkd.objective, gkd.beta, gkd.onpolicy_lambda, gkd.temperature) == ("jsd", 0.5, 0.5, 1.5)
    assert TrainConfig.from_preset("sft", **_train_kw()).mode == "sft"
    with pytest.raises(KdlensError, match="unknown preset 'kd'"):
        TrainConfig.from_preset("kd", **_train_kw())
