"""What the console shows: progress weighted by expected cost, scheduling by the costliest remaining
chain, training steps read from a run's metrics.jsonl."""

import json

from kdlens.models import tiny_param_count
from kdlens.study import load_study_config, plan_study
from kdlens.study.progress import (
    expected_cost,
    model_params_m,
    planned_steps,
    remaining_path_cost,
    training_step,
)


def test_param_estimate_matches_the_built_models():
    for name in ("tiny-s1", "tiny-s4", "tiny-teacher"):
        assert abs(model_params_m(name) * 1e6 - tiny_param_count(name)) / tiny_param_count(name) < 0.01


def test_costs_order_units_as_their_work_does():
    plan = plan_study(load_study_config(None))
    by_label = {u.label: u for u in plan.units}
    cost = {u.label: expected_cost(u, plan) for u in plan.units}
    # pretraining the teacher costs more than pretraining the smallest student, which costs more
    # than the task unit; KD of a student costs more than its SFT; GKD (on-policy) more than SeqKD
    assert cost["base tiny-teacher"] > cost["base tiny-s1"] > cost["task synthetic"]
    assert cost["kd tiny-teacher->tiny-s1 SeqKD T=1 sigma=0 seed=0"] > cost["sft tiny-s1 seed=0"]
    assert cost["kd tiny-teacher->tiny-s1 GKD T=1 sigma=0 seed=0"] > cost["kd tiny-teacher->tiny-s1 SeqKD T=1 sigma=0 seed=0"]
    assert cost["eval sft tiny-s4 seed=0"] > cost["eval sft tiny-s1 seed=0"]
    assert max(cost.values()) / min(cost.values()) > 100  # why counting units misleads the ETA
    assert planned_steps(by_label["base tiny-teacher"], plan) == plan.config["teacher_pretrain"]["max_steps"]
    assert planned_steps(by_label["base tiny-s1"], plan) == plan.config["pretrain"]["max_steps"]
    assert planned_steps(by_label["sft tiny-teacher (task-aware teacher)"], plan) == plan.config["teacher_sft"]["max_steps"]
    assert planned_steps(by_label["sft tiny-s1 seed=0"], plan) == plan.config["train"]["max_steps"]


def test_the_teacher_chain_is_scheduled_first():
    plan = plan_study(load_study_config(None))
    cost = {u.id: expected_cost(u, plan) for u in plan.units}
    priority = remaining_path_cost(plan, cost)
    bases = sorted(plan.of_kind("base"), key=lambda u: -priority[u.id])
    assert bases[0].params["model"] == "tiny-teacher"  # everything KD waits for it
    report = plan.of_kind("report")[0]
    assert priority[report.id] == cost[report.id]
    task = plan.of_kind("task")[0]
    assert priority[task.id] == max(priority.values())


def test_training_step_reads_the_last_logged_step(tmp_path):
    assert training_step(tmp_path) is None
    lines = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "val_ce": 1.4}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"step\": 3, \"lo")
    assert training_step(tmp_path) == 2  # a half-written last line is skipped


def test_a_step_costs_in_proportion_to_its_examples():
    import dataclasses

    config = load_study_config(None)
    doubled = dataclasses.replace(config, teacher_sft={**config.teacher_sft, "micro_batch_size": 16, "grad_accum": 4})
    halved = dataclasses.replace(config, teacher_sft={**config.teacher_sft, "micro_batch_size": 8, "grad_accum": 2})
    label = "sft tiny-teacher (task-aware teacher)"
    costs = []
    for cfg in (halved, doubled):
        plan = plan_study(cfg)
        costs.append(next(expected_cost(u, plan) for u in plan.units if u.label == label))
    # 64 vs 16 examples per step, the same number of steps: four times the work, less the unit overhead
    assert 3.9 < (costs[1] - 1.0) / (costs[0] - 1.0) < 4.1
