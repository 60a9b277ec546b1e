"""Study configuration: a TOML file (or a built-in preset) read into frozen dataclasses.

The grid is one factor at a time around the paper's main runs, which is how the paper ran it:
every (teacher, student) pair gets each objective at T=1 with sigma=0 and a task-aware teacher; the
``ablation_students`` additionally get the temperature sweep (objectives that use T), the noise
sweep (forward KL, T=1) and the task-unaware (base) teacher. ``grid.mode = "full"`` runs the whole
product instead. Sections ``train``, ``sft``, ``kd`` and ``evaluate`` are passed through to the
stages (``kdlens.train.TrainConfig`` and ``kdlens.evaluate``), which validate their own keys.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.objectives import OBJECTIVE_NAMES, PAPER_NAMES, TEMPERATURE_ABLATION, paper_name

METHOD_NAMES = PAPER_NAMES
OBJECTIVES_WITH_TEMPERATURE = TEMPERATURE_ABLATION
KNOWN_OBJECTIVES = OBJECTIVE_NAMES
method_name = paper_name  # the paper's method name for an objective (SeqKD/RevKD/GKD), else itself


@dataclass(frozen=True)
class TaskSpec:
    kind: str = "synthetic"  # "synthetic" | "files"
    seed: int = 0
    n_train: int = 2000
    n_test: int = 200
    train_file: str | None = None  # kind = "files": LLM-Adapters training records
    eval_tasks: tuple[str, ...] = ("synthetic",)  # task names of kdlens.tasks
    eval_data_dir: str | None = None  # folder holding the evaluation files (kind = "files")
    family: str = "synthetic"
    # kind = "synthetic": generation options of kdlens.data.synthetic.make_task
    levels: tuple[int, ...] = (1, 2)  # difficulty levels (1: one-digit operands)
    operations: tuple[str, ...] = ()  # operation types; empty: all of them
    rationale: str = "full"  # output style: "full" or "equations"

    def __post_init__(self):
        if self.kind not in ("synthetic", "files"):
            raise KdlensError(f"task.kind must be 'synthetic' or 'files', not {self.kind!r}")
        if self.kind == "files" and not self.train_file:
            raise KdlensError("task.kind = 'files' needs task.train_file (LLM-Adapters records)")
        if self.n_train < 1 or self.n_test < 1:
            raise KdlensError("task.n_train and task.n_test must be >= 1")


@dataclass(frozen=True)
class ModelsSpec:
    teachers: tuple[str, ...] = ("tiny-teacher",)
    students: tuple[str, ...] = ("tiny-s1", "tiny-s2", "tiny-s3")
    # Explicit (teacher, student) pairs; empty means every teacher with every student.
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.teachers or not self.students:
            raise KdlensError("models.teachers and models.students must each name at least one model")
        for t, s in self.pairs:
            if t not in self.teachers or s not in self.students:
                raise KdlensError(
                    f"models.pairs names ({t!r}, {s!r}) but the teacher must be in models.teachers "
                    "and the student in models.students")

    def all_pairs(self) -> tuple[tuple[str, str], ...]:
        if self.pairs:
            return self.pairs
        return tuple((t, s) for t in self.teachers for s in self.students if t != s)


@dataclass(frozen=True)
class GridSpec:
    objectives: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0)
    noise_sigmas: tuple[float, ...] = (0.0, 1.0, 5.0)
    task_unaware: bool = True
    ablation_students: tuple[str, ...] = ()  # empty: every student
    mode: str = "ablation"  # "ablation" (one factor at a time) | "full" (whole product)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        unknown = [o for o in self.objectives if o not in KNOWN_OBJECTIVES]
        if unknown:
            raise KdlensError(
                f"grid.objectives has unknown objective(s) {unknown}; known: {', '.join(KNOWN_OBJECTIVES)}")
        if self.mode not in ("ablation", "full"):
            raise KdlensError(f"grid.mode must be 'ablation' or 'full', not {self.mode!r}")
        if any(t <= 0 for t in self.temperatures):
            raise KdlensError("grid.temperatures must all be > 0")
        if any(s < 0 for s in self.noise_sigmas):
            raise KdlensError("grid.noise_sigmas must all be >= 0")
        if not self.seeds:
            raise KdlensError("grid.seeds must name at least one seed")


@dataclass(frozen=True)
class StudyConfig:
    name: str = "synthetic-mini"
    jobs: int = 1  # units run in parallel (processes on this machine)
    # GPUs the units may use (CUDA_VISIBLE_DEVICES ids). Empty: every GPU `nvidia-smi -L` lists (none
    # on a CPU machine). A model unit holds one GPU (a torchrun unit nproc_per_node GPUs) while it runs.
    devices: tuple[str | int, ...] = ()
    # Processes per training unit: > 1 runs each SFT/KD unit under torchrun (DDP), one GPU each.
    nproc_per_node: int = 1
    task: TaskSpec = field(default_factory=TaskSpec)
    models: ModelsSpec = field(default_factory=ModelsSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    train: dict = field(default_factory=dict)  # common to every training unit
    sft: dict = field(default_factory=dict)  # SFT (and task-aware teacher) units only
    kd: dict = field(default_factory=dict)  # KD units only
    evaluate: dict = field(default_factory=dict)  # decoding and evaluation options
    base_models: dict = field(default_factory=dict)  # pretraining of synthetic base models

    def __post_init__(self):
        if self.jobs < 1:
            raise KdlensError("jobs must be >= 1")
        if self.nproc_per_node < 1:
            raise KdlensError("nproc_per_node must be >= 1")
        object.__setattr__(self, "devices", tuple(str(d) for d in self.devices))
        students = set(self.models.students)
        missing = [s for s in self.grid.ablation_students if s not in students]
        if missing:
            raise KdlensError(f"grid.ablation_students names {missing}, not in models.students")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"task": TaskSpec, "models": ModelsSpec, "grid": GridSpec}


def _build(cls, data: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise KdlensError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
    from kdlens.config import _coerce

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key in _SECTIONS and cls is StudyConfig:
            kwargs[key] = value  # built already
            continue
        try:
            kwargs[key] = _coerce(key, value, hints[key])
        except KdlensError as exc:
            raise KdlensError(f"{where}: {exc}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise KdlensError(f"{where}: {exc}") from exc


def study_config_from_dict(data: dict, where: str = "study config") -> StudyConfig:
    data = dict(data)
    for section, cls in _SECTIONS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise KdlensError(f"{where}: [{section}] must be a table")
            data[section] = _build(cls, data[section], f"{where} [{section}]")
    return _build(StudyConfig, data, where)


PRESETS = ("synthetic", "smoke", "paper-qwen-math")


def load_study_config(source: str | Path | None = None) -> StudyConfig:
    """Read a study TOML file, or a preset by name (default: the offline ``synthetic`` miniature)."""
    if source is None or str(source) in PRESETS:
        name = "synthetic" if source is None else str(source)
        text = resources.files("kdlens.study.presets").joinpath(f"{name}.toml").read_text()
        where = f"preset {name!r}"
    else:
        path = Path(source)
        if not path.is_file():
            raise KdlensError(f"{path}: no such study config (or use a preset: {', '.join(PRESETS)})")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise KdlensError(f"{path}: not UTF-8 text (byte {exc.start}); save the study config as UTF-8") from None
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KdlensError(f"{where}: invalid TOML: {exc}") from exc
    cfg = study_config_from_dict(data, where)
    from kdlens.study.validate import check_study

    check_study(cfg, where)  # every section and key, before anything runs
    return cfg
