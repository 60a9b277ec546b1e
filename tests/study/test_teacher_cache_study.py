"""A study with [teacher_cache]: each teacher is cached once, the KD runs that can train from the cache do
(without loading the teacher), and every compare row carries the token-level agreement column.
Run: ``python -m pytest tests/study/test_teacher_cache_study.py -q``."""

import json
import tomllib
from importlib import resources

import polars as pl
import pytest

from kdlens.errors import KdlensError
from kdlens.study import plan_study
from kdlens.study.config import study_config_from_dict
from kdlens.study.validate import check_study


def smoke_dict(**changes) -> dict:
    data = tomllib.loads(resources.files("kdlens.study.presets").joinpath("smoke.toml").read_text())
    data["models"]["students"] = ["tiny-s1"]
    data["grid"].update(seeds=[0], objectives=["forward_kl", "reverse_kl", "jsd"], temperatures=[1.0, 2.0],
                        ablation_students=["tiny-s1"])
    for key, value in changes.items():
        data[key] = value
    return data


def test_plan_caches_each_teacher_once_for_the_runs_that_can_use_it():
    cfg = study_config_from_dict(smoke_dict(teacher_cache={"k": 16}))
    plan = plan_study(cfg)
    caches = plan.of_kind("cache")
    assert len(caches) == 1 and caches[0].params["temperatures"] == [1.0, 2.0]
    by_id = plan.by_id()
    assert by_id[caches[0].deps["teacher"]].kind == "sft"  # the task-aware teacher
    kd = plan.of_kind("kd")
    cached = {u.params["objective"] for u in kd if "cache" in u.deps}
    assert cached == {"forward_kl", "reverse_kl"}  # GKD's on-policy samples need the live teacher
    ids = [u.id for u in plan.units]
    assert ids.index(caches[0].id) < min(ids.index(u.id) for u in kd if "cache" in u.deps)
    # with on-policy sampling off, GKD trains from the cache too
    plan2 = plan_study(study_config_from_dict(smoke_dict(teacher_cache={"k": 16}, kd={"onpolicy_lambda": 0.0})))
    assert all("cache" in u.deps for u in plan2.of_kind("kd"))
    # without [teacher_cache] nothing changes: no cache unit, the same unit ids as before
    plain = plan_study(study_config_from_dict(smoke_dict()))
    assert not plain.of_kind("cache")
    assert {u.id for u in plain.of_kind("kd")} & {u.id for u in kd} == {
        u.id for u in kd if "cache" not in u.deps}


@pytest.mark.parametrize("section,message", [({"out_dir": "x"}, "set by the study"),
                                             ({"temperatures": [1.0]}, "set by the study"),
                                             ({"k": 0}, "out of range"), ({"kk": 3}, "unknown key")])
def test_bad_teacher_cache_sections_are_explained(section, message):
    cfg = study_config_from_dict(smoke_dict(teacher_cache=section))
    with pytest.raises(KdlensError, match=message):
        check_study(cfg, "study")


@pytest.mark.slow
def test_study_from_a_teacher_cache_runs_end_to_end(tmp_path):
    from kdlens.study.runner import run_study, unit_result

    data = smoke_dict(teacher_cache={"k": 32})
    data["grid"].update(objectives=["forward_kl"], temperatures=[1.0])
    cfg = study_config_from_dict(data)
    check_study(cfg, "study")
    outcome = run_study(cfg, tmp_path, progress=False, echo=lambda s: None)
    assert outcome.ok, (outcome.failed, outcome.blocked)
    plan = plan_study(cfg)
    (cache,) = plan.of_kind("cache")
    built = unit_result(tmp_path, cache.id)["result"]
    assert built["complete"] and built["tokens"] > 0
    manifest = json.loads((tmp_path / "units" / cache.id / "cache" / "cache.json").read_text())
    assert manifest["k"] == 32 and manifest["temperatures"] == [1.0]
    for u in plan.of_kind("kd"):
        run_cfg = json.loads(next((tmp_path / "units" / u.id).rglob("result.json")).read_text())["config"]
        assert run_cfg["teacher_cache"] == str(tmp_path / "units" / cache.id / "cache")
        assert run_cfg["teacher"] is None
    for name in ("agreement", "fidelity"):
        table = pl.read_parquet(tmp_path / "results" / f"{name}.parquet")
        assert table.height and table["token_agreement"].is_between(0, 100).all(), name
