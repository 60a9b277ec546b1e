"""The study config and its plan: validation, grid expansion, dependency order, stable ids."""

import dataclasses

import pytest
from kdlens.errors import KdlensError
from kdlens.study.config import (
    GridSpec,
    ModelsSpec,
    StudyConfig,
    load_study_config,
    study_config_from_dict,
)
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


@pytest.mark.parametrize("grid, expected", [
    ({}, {"S1"}),  # by default the ablation students
    ({"task_unaware_students": ("S1", "S2")}, {"S1", "S2"}),
    ({"task_unaware_students": ("S2",)}, {"S2"}),
    ({"task_unaware_students": ("S2",), "task_unaware": False}, set()),
])
def test_task_unaware_students_choose_who_learns_from_the_base_teacher(grid, expected):
    runs = kd_runs(small_config(seeds=(0, 1), **grid))
    unaware = [r for r in runs if r.teacher_kind == "task_unaware"]
    # one run per (student, noise objective, seed), at T = 1 without noise
    assert sorted((r.student, r.objective, r.seed) for r in unaware) == sorted(
        (s, "forward_kl", seed) for s in expected for seed in (0, 1))
    assert all(r.temperature == 1.0 and r.noise_sigma == 0.0 for r in unaware)
    # the other ablations stay on the ablation students
    s2 = {(r.objective, r.temperature, r.noise_sigma) for r in runs if r.student == "S2" and r.teacher_kind == "task_aware"}
    assert s2 == {(o, 1.0, 0.0) for o in ("forward_kl", "reverse_kl", "jsd")}


def test_full_grid_is_the_product():
    runs = kd_runs(small_config(mode="full", task_unaware=False))
    # per student: forward/reverse 3 T x 3 sigma each, jsd 1 T x 3 sigma
    assert len(runs) == 2 * (2 * 3 * 3 + 3)


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_plan_is_topological_and_complete(seeds):
    plan = plan_study(small_config(seeds=seeds))
    seen = set()
    for u in plan.units:
        assert all(d in seen for d in u.deps.values()), u.label
        seen.add(u.id)
    kinds = [u.kind for u in plan.units]
    n = len(seeds)
    assert kinds.count("task") == 1 and kinds.count("report") == 1
    assert kinds.count("base") == 3  # one pretrained base per model, shared by every seed
    assert kinds.count("sft") == 1 + 2 * n  # the teacher once, each student once per seed
    n_kd = kinds.count("kd")
    assert n_kd == n * len(kd_runs(small_config(seeds=(0,))))  # every KD configuration per seed
    assert kinds.count("eval") == 3 + 1 + 2 * n + n_kd  # bases, SFT models, KD students
    assert kinds.count("compare") == 2 * n + n_kd  # SFT students and KD students vs their teacher
    report = plan.of_kind("report")[0]
    assert set(report.deps.values()) == {u.id for u in plan.units if u.kind in ("eval", "compare")}


def test_units_name_their_dependencies():
    plan = plan_study(small_config(seeds=(0, 1)))
    ids = plan.by_id()
    task = plan.of_kind("task")[0]
    for u in plan.of_kind("base"):
        assert u.deps == {"task": task.id}
    for u in plan.of_kind("sft"):
        assert set(u.deps) == {"task", "base"}
        assert ids[u.deps["base"]].params["model"] == u.params["model"]  # SFT starts from its own base
    for u in plan.of_kind("kd"):
        assert set(u.deps) == {"task", "base", "teacher"}
        assert ids[u.deps["base"]].params["model"] == u.params["student"]  # KD starts from the student base
    for u in plan.of_kind("eval"):
        assert set(u.deps) == {"task", "model"} and u.deps["model"] == u.params["of"]
    for u in plan.of_kind("compare"):
        assert set(u.deps) == {"teacher_eval", "student_eval"}
        assert ids[u.deps["student_eval"]].params["of"] == u.params["of"]


def test_task_unaware_runs_learn_from_the_base_teacher():
    plan = plan_study(small_config(seeds=(0, 1)))
    ids = plan.by_id()
    teacher_sft = [u for u in plan.of_kind("sft") if u.params["model"] == "T"]
    assert len(teacher_sft) == 1 and "teacher_sft" in teacher_sft[0].params
    for u in plan.of_kind("kd"):
        teacher_dep = ids[u.deps["teacher"]]
        expected = "base" if u.params["teacher_kind"] == "task_unaware" else "sft"
        assert teacher_dep.kind == expected and teacher_dep.params["model"] == "T"
        if expected == "sft":  # every seed distils from the one task-aware teacher
            assert teacher_dep.id == teacher_sft[0].id


def test_seeds_repeat_every_student_side_configuration():
    cfg = small_config(seeds=(0, 1, 2))
    runs = kd_runs(cfg)
    by_config = {}
    for r in runs:
        key = (r.student, r.objective, r.temperature, r.noise_sigma, r.teacher_kind)
        by_config.setdefault(key, set()).add(r.seed)
    assert by_config and all(seeds == {0, 1, 2} for seeds in by_config.values())
    plan = plan_study(cfg)
    sft_seeds = {}
    for u in plan.of_kind("sft"):
        if u.params["model"] != "T":
            sft_seeds.setdefault(u.params["model"], set()).add(u.params["seed"])
    assert sft_seeds == {"S1": {0, 1, 2}, "S2": {0, 1, 2}}


def test_noise_and_teacher_kind_ablations_run_on_the_ablation_objectives():
    runs = kd_runs(small_config(ablation_objectives=("forward_kl", "reverse_kl")))
    noisy = {(r.objective, r.noise_sigma) for r in runs if r.noise_sigma > 0}
    assert noisy == {(o, s) for o in ("forward_kl", "reverse_kl") for s in (1.0, 5.0)}
    unaware = {r.objective for r in runs if r.teacher_kind == "task_unaware"}
    assert unaware == {"forward_kl", "reverse_kl"}
    assert all(r.student == "S1" for r in runs if r.noise_sigma > 0 or r.teacher_kind == "task_unaware")


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
    ({"grid": {"task_unaware_students": ["missing"]}}, "task_unaware_students names"),
    ({"models": {"teachers": ["T"], "students": ["S"], "pairs": [["X", "S"]]}}, "pairs"),
    ({"task": {"kind": "files"}}, "train_file"),
    ({"bogus": 1}, "unknown key"),
    ({"grid": {"colour": "red"}}, "unknown key"),
    ({"jobs": 0}, "jobs"),
    ({"jobs": "two"}, "integer"),
    ({"task": {"n_test": 0}}, "out of range"),
    ({"task": {"rationale": "prose"}}, "not one of"),
    ({"grid": {"seeds": [0, 0]}}, "repeats a seed"),
    ({"grid": {"ablation_objectives": ["nope"]}}, "unknown objective"),
])
def test_bad_configs_are_explained(data, message):
    with pytest.raises(KdlensError, match=message):
        study_config_from_dict(data)


def test_presets_load_and_plan():
    for name in ("synthetic", "quick", "smoke", "paper-qwen-math"):
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


def test_default_preset_is_powered():
    """Issue 10: >= 3 seeds, >= 1000 test items, >= 4 students spanning >= 10x, pretrained bases."""
    from kdlens.models import tiny_param_count

    cfg = load_study_config(None)
    assert len(cfg.grid.seeds) >= 3
    assert cfg.task.n_test >= 1000
    sizes = [tiny_param_count(s) for s in cfg.models.students]
    assert len(sizes) >= 4 and max(sizes) / min(sizes) >= 10
    assert cfg.pretrain["max_steps"] > 0
