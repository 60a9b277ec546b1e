"""The study as a DAG of units: what to train, evaluate and compare, and in which order.

A unit's id is a hash of its kind, its parameters and the ids of the units it depends on, so a
changed setting changes the id of that unit and of everything downstream, and an unchanged unit
keeps its finished artifacts. A unit names its dependencies (``deps["teacher"]``). Order: task data
(and the generic pretraining corpus), then the base models (tiny ones pretrained on the corpus),
then SFT from each base (the SFT of a teacher is its task-aware version, trained once; every
student's SFT once per seed), KD after its teacher (once per seed), evaluation after training,
comparison after both sides are evaluated, the report last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from kdlens.errors import KdlensError
from kdlens.study.config import OBJECTIVES_WITH_TEMPERATURE, StudyConfig, method_name

KINDS = ("task", "base", "sft", "cache", "kd", "eval", "compare", "report")


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
    deps: dict[str, str] = field(default_factory=dict)  # role -> unit id, e.g. {"teacher": "sft-..."}
    id: str = field(default="")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit kind {self.kind}")
        if not self.id:
            digest = _digest({"kind": self.kind, "params": self.params, "deps": sorted(self.deps.items())})
            object.__setattr__(self, "id", f"{self.kind}-{_slug(self.label.split(' ', 1)[-1])}-{digest}")

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "label": self.label, "params": self.params,
                "deps": dict(self.deps)}

    @classmethod
    def from_dict(cls, d: dict) -> Unit:
        return cls(kind=d["kind"], label=d["label"], params=d["params"], deps=dict(d["deps"]), id=d["id"])


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
            missing = [d for d in u.deps.values() if d not in seen]
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
    def from_dict(cls, d: dict) -> Plan:
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
    unaware = set(g.task_unaware_students or ablate) if g.task_unaware else set()

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
            if student in ablate:
                for obj in g.objectives:  # temperature sweep
                    for t in temps(obj):
                        runs.append(KDRun(teacher, student, obj, t, 0.0, "task_aware", seed))
                for obj in g.noise_objectives():  # noise sweep, T = 1
                    for s in g.noise_sigmas:
                        runs.append(KDRun(teacher, student, obj, 1.0, s, "task_aware", seed))
            if student in unaware:
                for obj in g.noise_objectives():  # the task-unaware (base) teacher, T = 1
                    runs.append(KDRun(teacher, student, obj, 1.0, 0.0, "task_unaware", seed))
    unique: list[KDRun] = []
    for r in runs:
        if r not in unique:
            unique.append(r)
    return unique


def uses_cache(cfg: StudyConfig, objective: str) -> bool:
    """Whether a KD run of ``objective`` trains from its teacher's cache: [teacher_cache] is given, the
    sparse-teacher loss has the objective, and the run takes no on-policy samples (run_kd's GKD default)."""
    from kdlens.train.config import CACHE_OBJECTIVES

    if not cfg.teacher_cache or objective not in CACHE_OBJECTIVES:
        return False
    settings = {**cfg.train, **cfg.kd}
    return float(settings.get("onpolicy_lambda", 0.5 if objective == "jsd" else 0.0)) == 0.0


def plan_study(cfg: StudyConfig) -> Plan:
    """Expand a study config into its units, in dependency order."""
    units: list[Unit] = []
    task = Unit("task", "task " + cfg.task.kind, {"task": cfg.to_dict()["task"]})
    units.append(task)
    many = len(cfg.grid.seeds) > 1
    seed_tag = (lambda seed: f" seed={seed}") if many else (lambda seed: "")

    models = list(dict.fromkeys(cfg.models.teachers + cfg.models.students))
    base: dict[str, Unit] = {}
    for m in models:
        pretrain = {**cfg.pretrain, **(cfg.teacher_pretrain if m in cfg.models.teachers else {})}
        u = Unit("base", f"base {m}", {"model": m, "pretrain": pretrain}, {"task": task.id})
        base[m] = u
        units.append(u)

    seed0 = cfg.grid.seeds[0]
    teacher_sft: dict[str, Unit] = {}  # the task-aware teacher: teacher base + task fine-tuning, once
    for m in cfg.models.teachers:
        u = Unit("sft", f"sft {m} (task-aware teacher)",
                 {"model": m, "seed": seed0, "train": cfg.train, "sft": cfg.sft, "teacher_sft": cfg.teacher_sft},
                 {"task": task.id, "base": base[m].id})
        teacher_sft[m] = u
        units.append(u)
    student_sft: dict[tuple[str, int], Unit] = {}  # every student, every seed
    for seed in cfg.grid.seeds:
        for m in cfg.models.students:
            u = Unit("sft", f"sft {m}{seed_tag(seed)}",
                     {"model": m, "seed": seed, "train": cfg.train, "sft": cfg.sft},
                     {"task": task.id, "base": base[m].id})
            student_sft[(m, seed)] = u
            units.append(u)

    def teacher_of(r: KDRun) -> Unit:
        return teacher_sft[r.teacher] if r.teacher_kind == "task_aware" else base[r.teacher]

    caches: dict[str, Unit] = {}  # teacher unit id -> its teacher-cache unit ([teacher_cache] given)
    if cfg.teacher_cache:
        cached_runs: dict[str, list[KDRun]] = {}
        for r in kd_runs(cfg):
            if uses_cache(cfg, r.objective):
                cached_runs.setdefault(teacher_of(r).id, []).append(r)
        for teacher_id, runs_ in cached_runs.items():
            r0 = runs_[0]
            temps = sorted({float(r.temperature) for r in runs_})
            u = Unit("cache", f"cache {r0.teacher}" + (" base-teacher" if r0.teacher_kind == "task_unaware" else ""),
                     {"teacher": r0.teacher, "teacher_kind": r0.teacher_kind, "temperatures": temps,
                      "teacher_cache": cfg.teacher_cache, "train": cfg.train, "kd": cfg.kd},
                     {"task": task.id, "teacher": teacher_id})
            caches[teacher_id] = u
            units.append(u)

    kd: list[tuple[KDRun, Unit]] = []
    for r in kd_runs(cfg):
        label = (f"kd {r.teacher}->{r.student} {method_name(r.objective)} T={r.temperature:g} "
                 f"sigma={r.noise_sigma:g}" + (" base-teacher" if r.teacher_kind == "task_unaware" else "")
                 + seed_tag(r.seed))
        deps = {"task": task.id, "base": base[r.student].id, "teacher": teacher_of(r).id}
        if teacher_of(r).id in caches and uses_cache(cfg, r.objective):
            deps["cache"] = caches[teacher_of(r).id].id
        u = Unit("kd", label, {**r.__dict__, "train": cfg.train, "kd": cfg.kd}, deps)
        kd.append((r, u))
        units.append(u)

    evals: dict[str, Unit] = {}
    trained_units = [*base.values(), *teacher_sft.values(), *student_sft.values(), *(u for _, u in kd)]
    # a teacher's eval also computes its side of the token agreement, once for all its students
    teachers = {u.id for u in teacher_sft.values()} | {teacher_of(r).id for r, _ in kd}
    for trained in trained_units:
        params = {"of": trained.id, "evaluate": cfg.evaluate}
        if trained.id in teachers:
            params["teacher_picks"] = True
        e = Unit("eval", "eval " + trained.label, params, {"task": task.id, "model": trained.id})
        evals[trained.id] = e
        units.append(e)

    compares: list[Unit] = []
    for teacher, student in cfg.models.all_pairs():  # SFT student vs the task-aware teacher
        for seed in cfg.grid.seeds:
            s_unit = student_sft[(student, seed)]
            compares.append(Unit("compare", f"compare SFT {teacher}->{student}{seed_tag(seed)}",
                                 {"teacher": teacher, "student": student, "of": s_unit.id},
                                 {"teacher_eval": evals[teacher_sft[teacher].id].id,
                                  "student_eval": evals[s_unit.id].id}))
    for r, u in kd:  # KD student vs the teacher it learned from
        compares.append(Unit("compare", "compare " + u.label.split(" ", 1)[1],
                             {"teacher": r.teacher, "student": r.student, "of": u.id},
                             {"teacher_eval": evals[teacher_of(r).id].id, "student_eval": evals[u.id].id}))
    units.extend(compares)

    report = Unit("report", "report " + cfg.name, {"name": cfg.name},
                  {u.id: u.id for u in units if u.kind in ("eval", "compare")})
    units.append(report)
    return Plan(config=cfg.to_dict(), units=tuple(units))
