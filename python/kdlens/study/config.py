"""Study configuration: a TOML file (or a built-in preset) read into frozen dataclasses, checked by
kdlens.config (types, ranges, choices and help per key).

The grid is one factor at a time around the paper's main runs, which is how the paper ran it:
every (teacher, student) pair gets each objective at T=1 with sigma=0 and a task-aware teacher; the
``ablation_students`` additionally get the temperature sweep (objectives that use T) and the noise
sweep on ``ablation_objectives`` (T=1), and the ``task_unaware_students`` (by default the ablation
students) the task-unaware (base) teacher on ``ablation_objectives`` (T=1). Every student-side run
(SFT and KD) is repeated for each of ``grid.seeds``. ``grid.mode = "full"`` runs the whole product
instead. Sections ``train``, ``sft``, ``teacher_sft``, ``kd``, ``pretrain``, ``teacher_pretrain`` and ``evaluate`` are
passed through to the stages (``kdlens.train.TrainConfig`` and ``kdlens.eval.run``), which validate
their own keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tomllib

from kdlens.config import option
from kdlens.errors import KdlensError
from kdlens.objectives import OBJECTIVE_NAMES, PAPER_NAMES, TEMPERATURE_ABLATION, paper_name

METHOD_NAMES = PAPER_NAMES
OBJECTIVES_WITH_TEMPERATURE = TEMPERATURE_ABLATION
KNOWN_OBJECTIVES = OBJECTIVE_NAMES
method_name = paper_name  # the paper's method name for an objective (SeqKD/RevKD/GKD), else itself


@dataclass(frozen=True)
class TaskSpec:
    kind: str = option("synthetic", help="synthetic (generated offline) or files (LLM-Adapters records)",
                       choices=("synthetic", "files"))
    seed: int = option(0, help="seed of the generated task and corpus", range=(0, 2**31 - 1))
    n_train: int = option(2000, help="training problems (synthetic)", range=(1, None))
    n_test: int = option(200, help="test problems (synthetic)", range=(1, None))
    train_file: str | None = option(None, help="training records (kind = files)")
    eval_tasks: tuple[str, ...] = option(("synthetic",), help="task names of kdlens.eval.tasks to evaluate on")
    eval_data_dir: str | None = option(None, help="folder holding the evaluation files (kind = files)")
    family: str = option("synthetic", help="task family the scores are reported under")
    levels: tuple[int, ...] = option((1, 2), help="difficulty levels of the synthetic problems (1: one-digit operands)")
    operations: tuple[str, ...] = option((), help="operation types of the synthetic problems; empty: all of them")
    rationale: str = option("full", help="output style of the synthetic problems", choices=("full", "equations"))
    corpus_docs: int = option(4000, help="documents of the generic pretraining corpus of tiny base models "
                              "(kdlens.data.synthetic.make_pretraining_corpus)", range=(1, None))

    def __post_init__(self):
        if self.kind == "files" and not self.train_file:
            raise KdlensError("task.kind = 'files' needs task.train_file (LLM-Adapters records)")


@dataclass(frozen=True)
class ModelsSpec:
    teachers: tuple[str, ...] = option(("tiny-teacher",), help="teacher models (tiny names, folders or hub ids)")
    students: tuple[str, ...] = option(("tiny-s1", "tiny-s2", "tiny-s3", "tiny-s4"), help="student models")
    pairs: tuple[tuple[str, str], ...] = option((), help="explicit (teacher, student) pairs; empty: every teacher "
                                                "with every student")

    def __post_init__(self):
        if not self.teachers or not self.students:
            raise KdlensError("models.teachers and models.students must each name at least one model")
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        for pair in self.pairs:
            if len(pair) != 2:
                raise KdlensError(f"models.pairs entries must be [teacher, student], got {list(pair)}")
            t, s = pair
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
    objectives: tuple[str, ...] = option(("forward_kl", "reverse_kl", "jsd"), help="KD objectives of the main runs")
    temperatures: tuple[float, ...] = option((1.0, 2.0, 5.0), help="temperature sweep (objectives that use T)")
    noise_sigmas: tuple[float, ...] = option((0.0, 1.0, 5.0), help="teacher-noise sweep (T = 1)")
    task_unaware: bool = option(True, help="also distil from the task-unaware (base) teacher")
    ablation_students: tuple[str, ...] = option((), help="students that get the temperature and noise ablations "
                                                "(and, unless task_unaware_students says otherwise, the "
                                                "task-unaware teacher); empty: every student")
    ablation_objectives: tuple[str, ...] = option((), help="objectives of the noise and teacher-kind ablations; "
                                                  "empty: the first objective")
    task_unaware_students: tuple[str, ...] = option((), help="students distilled from the task-unaware teacher "
                                                    "(when task_unaware); empty: the ablation students")
    mode: str = option("ablation", help="ablation (one factor at a time) or full (whole product)",
                       choices=("ablation", "full"))
    seeds: tuple[int, ...] = option((0,), help="training seeds: every student-side run (SFT and KD) is repeated "
                                    "for each; the task-aware teacher is trained once, with the first")

    def __post_init__(self):
        for name in ("objectives", "ablation_objectives"):
            unknown = [o for o in getattr(self, name) if o not in KNOWN_OBJECTIVES]
            if unknown:
                raise KdlensError(
                    f"grid.{name} has unknown objective(s) {unknown}; known: {', '.join(KNOWN_OBJECTIVES)}")
        if any(t <= 0 for t in self.temperatures):
            raise KdlensError("grid.temperatures must all be > 0")
        if any(s < 0 for s in self.noise_sigmas):
            raise KdlensError("grid.noise_sigmas must all be >= 0")
        if not self.seeds:
            raise KdlensError("grid.seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise KdlensError(f"grid.seeds repeats a seed: {list(self.seeds)}")

    def noise_objectives(self) -> tuple[str, ...]:
        return self.ablation_objectives or self.objectives[:1]


@dataclass(frozen=True)
class StudyConfig:
    name: str = option("synthetic-mini", help="study name (report title)")
    jobs: int = option(1, help="units run in parallel (processes on this machine)", range=(1, 1024))
    # GPUs the units may use (CUDA_VISIBLE_DEVICES ids). Empty: every GPU `nvidia-smi -L` lists (none
    # on a CPU machine). A model unit holds one GPU (a torchrun unit nproc_per_node GPUs) while it runs.
    devices: tuple[str | int, ...] = option((), help="GPU ids units may use; empty: every GPU nvidia-smi lists")
    nproc_per_node: int = option(1, help="processes per training unit (> 1: torchrun, one GPU each)", range=(1, 1024))
    task: TaskSpec = option(default_factory=TaskSpec, help="[task]: the data")
    models: ModelsSpec = option(default_factory=ModelsSpec, help="[models]: teachers, students, pairs")
    grid: GridSpec = option(default_factory=GridSpec, help="[grid]: objectives, ablations, seeds")
    train: dict = option(default_factory=dict, help="[train]: kdlens.train options of every training unit")
    sft: dict = option(default_factory=dict, help="[sft]: options of SFT units (students and teachers)")
    teacher_sft: dict = option(default_factory=dict, help="[teacher_sft]: options of the task-aware teacher's "
                               "fine-tuning, over [train] and [sft]")
    kd: dict = option(default_factory=dict, help="[kd]: options of KD units")
    teacher_cache: dict = option(default_factory=dict, help="[teacher_cache]: kdlens teacher-cache options (k, "
                                 "logits_dtype, batch_size, ...); when given, each teacher is cached once and the KD "
                                 "runs that can train from a cache (forward_kl, reverse_kl, jsd without on-policy "
                                 "samples) do, without loading the teacher")
    evaluate: dict = option(default_factory=dict, help="[evaluate]: decoding and evaluation options")
    pretrain: dict = option(default_factory=dict, help="[pretrain]: kdlens.train options of the pretraining of "
                            "tiny base models on the generic corpus (max_steps = 0: random bases)")
    teacher_pretrain: dict = option(default_factory=dict, help="[teacher_pretrain]: options of the teachers' "
                                    "pretraining, over [pretrain]")

    def __post_init__(self):
        object.__setattr__(self, "devices", tuple(str(d) for d in self.devices))
        students = set(self.models.students)
        for key in ("ablation_students", "task_unaware_students"):
            missing = [s for s in getattr(self.grid, key) if s not in students]
            if missing:
                raise KdlensError(f"grid.{key} names {missing}, not in models.students")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"task": TaskSpec, "models": ModelsSpec, "grid": GridSpec}


def study_config_from_dict(data: dict, where: str = "study config") -> StudyConfig:
    """A StudyConfig from a TOML-shaped dict; types, ranges and choices checked by kdlens.config."""
    from kdlens.config import from_dict

    data = dict(data)
    for section, cls in _SECTIONS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise KdlensError(f"{where}: [{section}] must be a table")
            data[section] = from_dict(cls, data[section], origin=f"{where} [{section}]")
    return from_dict(StudyConfig, data, origin=where)


PRESETS = ("synthetic", "quick", "smoke", "paper-qwen-math")


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
