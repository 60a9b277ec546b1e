"""The study config and its plan: validation, grid expansion, dependency order, stable ids."""

import dataclasses

import pytest

from kdlens.errors import KdlensError
from kdlens.study.config import GridSpec, ModelsSpec, StudyConfig, load_study_config, study_config_from_dict
from kdlens.study.plan import kd_runs, plan_study


def small_config(**grid) -> StudyConfig:
    return StudyConfig(
        models=ModelsSpec(teachers=("T",), students=("S1", "S2")),
        grid=GridSpec(objectives=("forward_kl", "reverse_kl", "jsd"), temperatures=(1.0, 2.0, 5.0),
                      noise_sigmas=(0.0, 1.0, 5.0), ablation_students=("S1",), **grid),
    )


def test_ablation_grid_is_one_factor_at_a_time():
    runs = kd_runs(small_config())
    keyed = {(r.student, r.objective, r.temperature, r.noise_sigma, r.teacher_kind) for r in runs}
    assert len(keyed) == len(runs), "no duplicate runs"
    # S2 (not an ablation student): only the three main runs
    assert {k for k in keyed if k[0] == "S2"} == {
        ("S2", "forward_kl", 1.0, 0.0, "task_aware"), ("S2", "reverse_kl", 1.0, 0.0, "task_aware"),
        ("S2", "jsd", 1.0, 0.0, "task_aware")}
    s1 = {k for k in keyed if k[0] == "S1"}
    expected = {("S1", o, 1.0, 0.0, "task_aware") for o in ("forward_kl", "reverse_kl", "jsd")}
    expected |= {("S1", o, t, 0.0, "task_aware") for o in ("forward_kl", "reverse_kl") for t in (2.0, 5.0)}
    expected |= {("S1", "forward_kl", 1.0, s, "task_aware") for s in (1.0, 5.0)}
    expected |= {("S1", "forward_kl", 1.0, 0.0, "task_unaware")}
    assert s1 == expected  # jsd gets no temperature sweep: the paper's GKD does not use T


def test_full_grid_is_the_product():
    runs = kd_runs(small_config(mode="full", task_unaware=False))
    # per student: forward/reverse 3 T x 3 sigma each, jsd 1 T x 3 sigma
    assert len(runs) == 2 * (2 * 3 * 3 + 3)


def test_plan_is_topological_and_complete():
    plan = plan_study(small_config())
    seen = set()
    for u in plan.units:
        assert all(d in seen for d in u.deps), u.label
        seen.add(u.id)
    kinds = [u.kind for u in plan.units]
    assert kinds.count("task") == 1 and kinds.count("report") == 1
    assert kinds.count("sft") == 3  # teacher + two students
    n_kd = kinds.count("kd")
    assert kinds.count("eval") == 3 + 3 + n_kd  # base models, SFT models, KD students
    assert kinds.count("compare") == 2 + n_kd  # SFT students and KD students vs their teacher
    report = plan.of_kind("report")[0]
    assert set(report.deps) == {u.id for u in plan.units if u.kind in ("eval", "compare")}


def test_task_unaware_runs_learn_from_the_base_teacher():
    plan = plan_study(small_config())
    ids = plan.by_id()
    for u in plan.of_kind("kd"):
        teacher_dep = ids[u.deps[-1]]
        expected = "base" if u.params["teacher_kind"] == "task_unaware" else "sft"
        assert teacher_dep.kind == expected and teacher_dep.params["model"] == "T"


def test_ids_change_downstream_of_a_changed_setting_only():
    a = plan_study(small_config())
    b = plan_study(dataclasses.replace(small_config(), kd={"lr": 1e-3}))
    a_ids = {u.label: u.id for u in a.units}
    b_ids = {u.label: u.id for u in b.units}
    assert a_ids.keys() == b_ids.keys()
    for label, uid in a_ids.items():
        changed = b_ids[label] != uid
        downstream_of_kd = label.startswith(("kd ", "eval kd ", "compare ", "report "))
        sft_compare = label.startswith("compare SFT")
        assert changed == (downstream_of_kd and not sft_compare), label
    assert plan_study(small_config()).to_dict() == a.to_dict(), "planning is deterministic"


@pytest.mark.parametrize("data, message", [
    ({"grid": {"objectives": ["forward_kl", "nope"]}}, "unknown objective"),
    ({"grid": {"temperatures": [0.0]}}, "temperatures"),
    ({"grid": {"ablation_students": ["missing"]}}, "ablation_students"),
    ({"models": {"teachers": ["T"], "students": ["S"], "pairs": [["X", "S"]]}}, "pairs"),
    ({"task": {"kind": "files"}}, "train_file"),
    ({"bogus": 1}, "unknown key"),
    ({"grid": {"colour": "red"}}, "unknown key"),
    ({"jobs": 0}, "jobs"),
])
def test_bad_configs_are_explained(data, message):
    with pytest.raises(KdlensError, match=message):
        study_config_from_dict(data)


def test_presets_load_and_plan():
    for name in ("synthetic", "smoke", "paper-qwen-math"):
        cfg = load_study_config(name)
        plan = plan_study(cfg)
        assert plan.of_kind("report")
    paper = load_study_config("paper-qwen-math")
    assert len(paper.models.all_pairs()) == 9


def test_missing_config_file(tmp_path):
    with pytest.raises(KdlensError, match="no such study config"):
        load_study_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(KdlensError, match="invalid TOML"):
        load_study_config(bad)
