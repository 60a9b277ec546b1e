"""The study as a DAG of units: what to train, evaluate and compare, and in which order.

A unit's id is a hash of its kind, its parameters and the ids of the units it depends on, so a
changed setting changes the id of that unit and of everything downstream, and an unchanged unit
keeps its finished artifacts. Order: task data and base models, then SFT (the SFT of a teacher is
its task-aware version), KD after its teacher, evaluation after training, comparison after both
sides are evaluated, the report last.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from kdlens.errors import KdlensError
from kdlens.study.config import OBJECTIVES_WITH_TEMPERATURE, StudyConfig, method_name

KINDS = ("task", "base", "sft", "kd", "eval", "compare", "report")


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in ".-" else "-" for c in text)
    return "-".join(p for p in keep.split("-") if p)[:60]


@dataclass(frozen=True)
class Unit:
    """One unit of work; its artifacts live in ``<study>/units/<id>/``."""

    kind: str
    label: str  # human-readable, e.g. "kd tiny-teacher->tiny-s1 RevKD T=2"
    params: dict
    deps: tuple[str, ...] = ()
    id: str = field(default="")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit kind {self.kind}")
        if not self.id:
            digest = _digest({"kind": self.kind, "params": self.params, "deps": sorted(self.deps)})
            object.__setattr__(self, "id", f"{self.kind}-{_slug(self.label.split(' ', 1)[-1])}-{digest}")

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "label": self.label, "params": self.params,
                "deps": list(self.deps)}

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        return cls(kind=d["kind"], label=d["label"], params=d["params"], deps=tuple(d["deps"]),
                   id=d["id"])


@dataclass(frozen=True)
class Plan:
    config: dict
    units: tuple[Unit, ...]

    def __post_init__(self):
        ids = [u.id for u in self.units]
        if len(set(ids)) != len(ids):
            raise KdlensError("the study grid has duplicate units; remove repeated values from the config")
        seen: set[str] = set()
        for u in self.units:  # topological order is an invariant of the plan
            missing = [d for d in u.deps if d not in seen]
            if missing:
                raise ValueError(f"unit {u.id} depends on {missing} planned after it")
            seen.add(u.id)

    def by_id(self) -> dict[str, Unit]:
        return {u.id: u for u in self.units}

    def of_kind(self, kind: str) -> list[Unit]:
        return [u for u in self.units if u.kind == kind]

    def to_dict(self) -> dict:
        return {"config": self.config, "units": [u.to_dict() for u in self.units]}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(config=d["config"], units=tuple(Unit.from_dict(u) for u in d["units"]))


@dataclass(frozen=True)
class KDRun:
    teacher: str
    student: str
    objective: str
    temperature: float
    noise_sigma: float
    teacher_kind: str  # "task_aware" | "task_unaware"
    seed: int


def kd_runs(cfg: StudyConfig) -> list[KDRun]:
    """The KD runs of the grid, in a stable order, without duplicates."""
    g = cfg.grid
    runs: list[KDRun] = []
    kinds = ["task_aware"] + (["task_unaware"] if g.task_unaware else [])
    ablate = set(g.ablation_students or cfg.models.students)

    def temps(obj: str) -> Iterable[float]:
        return g.temperatures if obj in OBJECTIVES_WITH_TEMPERATURE else (1.0,)

    for seed in g.seeds:
        for teacher, student in cfg.models.all_pairs():
            if g.mode == "full":
                for obj in g.objectives:
                    for t in temps(obj):
                        for s in g.noise_sigmas:
                            for kind in kinds:
                                runs.append(KDRun(teacher, student, obj, t, s, kind, seed))
                continue
            for obj in g.objectives:  # the main runs
                runs.append(KDRun(teacher, student, obj, 1.0, 0.0, "task_aware", seed))
            if student not in ablate:
                continue
            for obj in g.objectives:  # temperature sweep
                for t in temps(obj):
                    runs.append(KDRun(teacher, student, obj, t, 0.0, "task_aware", seed))
            first = g.objectives[0]  # noise sweep and task-unaware teacher on the first objective
            for s in g.noise_sigmas:
                runs.append(KDRun(teacher, student, first, 1.0, s, "task_aware", seed))
            if g.task_unaware:
                runs.append(KDRun(teacher, student, first, 1.0, 0.0, "task_unaware", seed))
    unique: list[KDRun] = []
    for r in runs:
        if r not in unique:
            unique.append(r)
    return unique


def plan_study(cfg: StudyConfig) -> Plan:
    """Expand a study config into its units, in dependency order."""
    units: list[Unit] = []
    task = Unit("task", "task " + cfg.task.kind, {"task": cfg.to_dict()["task"]})
    units.append(task)

    models = list(dict.fromkeys(cfg.models.teachers + cfg.models.students))
    base: dict[str, Unit] = {}
    for m in models:
        u = Unit("base", f"base {m}", {"model": m, "base_models": cfg.base_models}, (task.id,))
        base[m] = u
        units.append(u)

    seed0 = cfg.grid.seeds[0]
    sft: dict[str, Unit] = {}
    for m in models:
        u = Unit("sft", f"sft {m}", {"model": m, "seed": seed0, "train": cfg.train, "sft": cfg.sft},
                 (task.id, base[m].id))
        sft[m] = u
        units.append(u)

    kd: list[tuple[KDRun, Unit]] = []
    for r in kd_runs(cfg):
        teacher_unit = sft[r.teacher] if r.teacher_kind == "task_aware" else base[r.teacher]
        label = (f"kd {r.teacher}->{r.student} {method_name(r.objective)} T={r.temperature:g} "
                 f"sigma={r.noise_sigma:g}" + (" base-teacher" if r.teacher_kind == "task_unaware" else "")
                 + (f" seed={r.seed}" if len(cfg.grid.seeds) > 1 else ""))
        u = Unit("kd", label, {**r.__dict__, "train": cfg.train, "kd": cfg.kd},
                 (task.id, base[r.student].id, teacher_unit.id))
        kd.append((r, u))
        units.append(u)

    evals: dict[str, Unit] = {}
    for trained in [*base.values(), *sft.values(), *(u for _, u in kd)]:
        e = Unit("eval", "eval " + trained.label, {"of": trained.id, "evaluate": cfg.evaluate},
                 (task.id, trained.id))
        evals[trained.id] = e
        units.append(e)

    compares: list[Unit] = []
    for teacher, student in cfg.models.all_pairs():  # SFT student vs its task-aware teacher
        t_eval, s_eval = evals[sft[teacher].id], evals[sft[student].id]
        compares.append(Unit("compare", f"compare SFT {teacher}->{student}",
                             {"teacher": teacher, "student": student, "of": sft[student].id},
                             (t_eval.id, s_eval.id)))
    for r, u in kd:  # KD student vs the teacher it learned from
        teacher_unit = sft[r.teacher] if r.teacher_kind == "task_aware" else base[r.teacher]
        compares.append(Unit("compare", "compare " + u.label.split(" ", 1)[1],
                             {"teacher": r.teacher, "student": r.student, "of": u.id},
                             (evals[teacher_unit.id].id, evals[u.id].id)))
    units.extend(compares)

    report = Unit("report", "report " + cfg.name, {"name": cfg.name},
                  tuple(u.id for u in units if u.kind in ("eval", "compare")))
    units.append(report)
    return Plan(config=cfg.to_dict(), units=tuple(units))
