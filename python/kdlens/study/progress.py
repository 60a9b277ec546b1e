"""What the console shows while a study runs: progress weighted by each unit's expected cost, and
the training step of the units that train.

Units differ in cost by three orders of magnitude (a task unit takes a fraction of a second, a
pretraining run minutes), so the progress bar counts expected seconds, not units, and its ETA is
that of the work left. The expected cost of a unit is a rough model of where the time goes on a CPU:
per optimiser step, a fixed overhead plus a term proportional to the parameters that run forward
and backward (the student; the teacher forward only, in KD; GKD also samples from the student), and
per evaluated item a term proportional to the model's size. Only the ratios between units matter
for the bar. Training units report their step through the ``metrics.jsonl`` of their run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlens.study.plan import Plan, Unit

# Seconds on one CPU core, measured roughly on the default study (a 0.9M-parameter model trains at
# about 0.25 s per step of 16 x 96 tokens; overhead per step about 0.02 s).
_STEP_OVERHEAD_S = 0.02
_STEP_S_PER_MPARAM = 0.25
_EVAL_S_PER_ITEM = 0.004
_EVAL_S_PER_ITEM_MPARAM = 0.01
_UNIT_OVERHEAD_S = 1.0
_CACHED_KD_STEP_S = 0.04  # the default study's KD step from a full-vocabulary (k = 512) teacher cache


def model_params_m(name: str) -> float:
    """Parameters (millions) of a tiny model from its config, without building it; 1.0 otherwise."""
    from kdlens.models import TINY_CONFIGS

    c = TINY_CONFIGS.get(name)
    if c is None:
        return 1.0
    h, layers, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    head = h // c["num_attention_heads"]
    attn = 2 * h * h + 2 * h * head * c["num_key_value_heads"]
    return (512 * h + layers * (attn + 3 * h * inter)) / 1e6


def _steps(settings: dict) -> float:
    """Optimiser steps in units of the reference step of 16 examples (the costs above are per 16)."""
    steps = float(settings.get("max_steps") or 100.0)
    examples = float(settings.get("micro_batch_size") or 16) * float(settings.get("grad_accum") or 1)
    return steps * examples / 16.0


def expected_cost(unit: Unit, plan: Plan) -> float:
    """Expected seconds of one unit on one core (a relative weight; see the module docstring)."""
    config = plan.config
    p = unit.params
    if unit.kind == "base":
        pretrain = p.get("pretrain") or {}
        steps = _steps(pretrain) if pretrain.get("max_steps") else 0.0
        return _UNIT_OVERHEAD_S + steps * (_STEP_OVERHEAD_S + _STEP_S_PER_MPARAM * model_params_m(p["model"]))
    if unit.kind in ("sft", "kd"):
        settings = {**config.get("train", {}), **p.get("sft", {}), **p.get("teacher_sft", {}), **p.get("kd", {})}
        model = p.get("model") or p.get("student")
        per_step = _STEP_OVERHEAD_S + _STEP_S_PER_MPARAM * model_params_m(model)
        if unit.kind == "kd" and "cache" in unit.deps:
            per_step += _CACHED_KD_STEP_S  # reading the cache rows, the loss over the cached ids
        elif unit.kind == "kd":
            per_step += _STEP_S_PER_MPARAM / 3 * model_params_m(p["teacher"])  # teacher forward
            if p.get("objective") == "jsd":
                per_step *= 2.0  # on-policy samples on half the micro-batches
        return _UNIT_OVERHEAD_S + _steps(settings) * per_step
    if unit.kind == "cache":  # one teacher forward over the training file, in reference steps of 16
        n = float(config.get("task", {}).get("n_train") or 1000)
        return _UNIT_OVERHEAD_S + n / 16.0 * (_STEP_OVERHEAD_S + _STEP_S_PER_MPARAM / 3 * model_params_m(p["teacher"]))
    if unit.kind == "eval":
        of = plan.by_id()[p["of"]]
        model = of.params.get("model") or of.params.get("student")
        n = float(config.get("task", {}).get("n_test") or 200)
        return _UNIT_OVERHEAD_S + n * (_EVAL_S_PER_ITEM + _EVAL_S_PER_ITEM_MPARAM * model_params_m(model))
    return _UNIT_OVERHEAD_S


def remaining_path_cost(plan: Plan, costs: dict[str, float]) -> dict[str, float]:
    """Per unit: its cost plus the costliest chain of units that wait for it (scheduling priority)."""
    dependents: dict[str, list[str]] = {u.id: [] for u in plan.units}
    for u in plan.units:
        for d in u.deps.values():
            dependents[d].append(u.id)
    out: dict[str, float] = {}
    for u in reversed(plan.units):  # the plan is in topological order
        out[u.id] = costs[u.id] + max((out[d] for d in dependents[u.id]), default=0.0)
    return out


def training_step(run_dir: Path) -> int | None:
    """The last optimiser step a training run logged (its ``metrics.jsonl``), or None."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "step" in rec:
            return int(rec["step"])
    return None


def planned_steps(unit: Unit, plan: Plan) -> int | None:
    """The optimiser steps a training unit is configured for (max_steps), else None."""
    p = unit.params
    if unit.kind == "base":
        return int((p.get("pretrain") or {}).get("max_steps") or 0) or None
    if unit.kind in ("sft", "kd"):
        settings = {**plan.config.get("train", {}), **p.get("sft", {}), **p.get("teacher_sft", {}), **p.get("kd", {})}
        return int(settings["max_steps"]) if settings.get("max_steps") else None
    return None
