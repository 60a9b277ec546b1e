"""Device budget: a unit that loads a model holds a GPU while it runs, so with one GPU no two model
units overlap in time even with two jobs; units that load no model run beside them and get none."""

import itertools

import pytest
from kdlens.study import plan_study
from kdlens.study.config import study_config_from_dict
from kdlens.study.runner import MODEL_UNITS, run_study, unit_result

pytestmark = pytest.mark.slow


def test_one_gpu_is_never_shared_by_two_units(tmp_path):
    cfg = study_config_from_dict({
        "jobs": 2, "devices": ["0"],
        "task": {"kind": "synthetic", "n_train": 40, "n_test": 4},
        "models": {"teachers": ["tiny-teacher"], "students": ["tiny-s1"]},
        "grid": {"objectives": ["forward_kl", "reverse_kl"], "temperatures": [1.0],
                 "noise_sigmas": [0.0], "task_unaware": False},
        "train": {"lora": False, "max_steps": 2, "val_size": 4, "max_length": 96,
                  "micro_batch_size": 4, "grad_accum": 1, "warmup_steps": 1, "progress": False},
        "evaluate": {"max_new_tokens": 8},
    })
    outcome = run_study(cfg, tmp_path / "s", progress=False, echo=lambda s: None)
    assert outcome.ok, outcome.failed
    records = [unit_result(tmp_path / "s", u.id) for u in plan_study(cfg).units]
    model = [r for r in records if r["kind"] in MODEL_UNITS]
    other = [r for r in records if r["kind"] not in MODEL_UNITS]
    assert all(r["devices"] == "0" for r in model)
    assert all(r["devices"] is None for r in other)
    for a, b in itertools.combinations(model, 2):
        assert a["ended_unix"] <= b["started_unix"] or b["ended_unix"] <= a["started_unix"], (
            a["label"], b["label"])


def test_more_processes_than_gpus_is_refused(tmp_path):
    from kdlens.errors import KdlensError

    cfg = study_config_from_dict({"devices": ["0"], "nproc_per_node": 2})
    with pytest.raises(KdlensError, match="nproc_per_node"):
        run_study(cfg, tmp_path / "s", progress=False, echo=lambda s: None)
