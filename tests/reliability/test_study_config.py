"""The whole study config is checked before anything runs (issue 12 item 5, review D9/U7-U11): a typo
or a bad value in any section fails ``kdlens study --dry-run`` with exit 2 and a message naming the
section and the key."""

from __future__ import annotations

import pytest
from kdlens.cli import main
from kdlens.errors import KdlensError
from kdlens.study import load_study_config
from kdlens.study.config import PRESETS

# the reviewer's long.toml (reliability-scripts/), one teacher and one student
BASE = """name = "long"
jobs = 1
[task]
kind = "synthetic"
n_train = 200
n_test = 24
eval_tasks = ["synthetic"]
[models]
teachers = ["tiny-teacher"]
students = ["tiny-s1"]
[grid]
objectives = ["forward_kl"]
temperatures = [1.0]
noise_sigmas = [0.0]
task_unaware = false
[train]
lora = false
max_steps = 150
lr = 3e-3
[sft]
[kd]
[evaluate]
max_new_tokens = 24
batch_size = 64
"""

CASES = [  # (replace, with, the message must contain)
    ("max_new_tokens = 24", "max_new_tokenz = 24", "[evaluate] has unknown key(s) max_new_tokenz"),
    ("batch_size = 64", "batch_size = 0", "[evaluate]: batch_size must be >= 1"),
    ("batch_size = 64", 'batch_size = "big"', "'evaluate.batch_size' must be an integer, got 'big'"),
    ("batch_size = 64", "batch_size = 64\nlimit = -1", "'evaluate.limit' must be >= 1"),
    ("batch_size = 64", 'batch_size = 64\ndtype = "fp8"', "'evaluate.dtype' = 'fp8' is not one of"),
    ('eval_tasks = ["synthetic"]', 'eval_tasks = ["gsm9k"]', "[task] eval_tasks: unknown task 'gsm9k'"),
    ("max_steps = 150", 'max_steps = "abc"', "[train]+[sft]: config key 'max_steps' must be an integer, got 'abc'"),
    ("max_steps = 150", "max_stepz = 150", "[train]+[sft]: unknown key(s) max_stepz"),
    ("lr = 3e-3", "lr = -1.0", "config key 'lr' = -1.0 is out of range"),
    ("lr = 3e-3", "lr = nan", "config key 'lr' must be a number, got nan"),
    ("[kd]", "[kd]\nbeta = 2.0", "[train]+[kd] (forward_kl, T=1, sigma=0): config key 'beta' = 2.0 is out of range"),
    ("temperatures = [1.0]", "temperatures = [1000.0]", "(forward_kl, T=1000, sigma=0): config key 'temperature'"),
    ("jobs = 1", 'jobs = "two"', "config key 'jobs' must be an integer, got 'two'"),
    ("temperatures = [1.0]", 'temperatures = "1"', "config key 'temperatures' must be a list, got '1'"),
    ('students = ["tiny-s1"]', 'students = ["tiny-s9"]', "models names 'tiny-s9', which is not a tiny model"),
    ('students = ["tiny-s1"]', 'students = ["/nonexistent/model"]', "[models]: model folder '/nonexistent/model' does not exist"),
]


def test_the_base_config_is_valid(tmp_path):
    (tmp_path / "s.toml").write_text(BASE)
    assert load_study_config(tmp_path / "s.toml").train["max_steps"] == 150


@pytest.mark.parametrize(("old", "new", "message"), CASES, ids=[c[1].split("\n")[-1] for c in CASES])
def test_dry_run_catches_every_section(tmp_path, capsys, old, new, message):
    assert old in BASE
    (tmp_path / "s.toml").write_text(BASE.replace(old, new, 1))
    with pytest.raises(KdlensError) as info:
        load_study_config(tmp_path / "s.toml")
    assert message in str(info.value)
    assert main(["study", str(tmp_path / "s.toml"), "-o", str(tmp_path / "S"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlens: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "S").exists()  # nothing was planned or run


def test_non_utf8_study_config_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "s.toml").write_bytes(b'name = "x\xff"\n')
    assert main(["study", str(tmp_path / "s.toml"), "--dry-run"]) == 2
    assert "not UTF-8 text (byte 9); save the study config as UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_pass_the_checks(preset):
    load_study_config(preset)
