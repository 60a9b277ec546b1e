"""Importer of the paper's released result CSVs into kdlens's tidy tables.

The CSVs ship inside kdlens (``kdlens/stats/paper_data/``, Apache-2.0, copied unchanged from the
authors' repository): :func:`bundled_paper_results` is their folder, and ``kdlens stats --paper`` /
``kdlens report --paper`` read them with no path. The released layout: score files with ``Teacher, Student, Method``, one column
per task and ``Average``; ``Method`` is ``BaseModel``, ``SFT`` or a run name
``student_{KD|RevKD|GKD}[_base_teacher]_temp_{T}``; ``Teacher`` is ``-`` for baselines and may
carry a checkpoint suffix (``Qwen2.5-3B_ckpt2400`` is the teacher ``Qwen2.5-3B``). Pair-metric files
(``EM1*.csv``/``EM2*.csv`` agreement, ``BLEU.csv``/``BLEU2.csv`` fidelity) add a ``Pair`` column and
use ``Method`` ``SFT``/``KD``. Task columns differ in case and order between files; they are mapped
to canonical keys (:func:`kdlens.stats.schema.canonical_task`). The files are read as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kdlens.errors import KdlensError
from kdlens.objectives import PAPER_NAMES
from kdlens.stats.schema import (
    AVERAGE_TASK,
    TASKS,
    canonical_task,
    is_known_task,
    validate_pair_metric,
    validate_results,
)

# run name -> (method type, task-unaware teacher?, temperature)
_RUN = re.compile(r"^student_(?P<kd>KD|RevKD|GKD)(?P<base>_base_teacher)?_temp_(?P<t>\d+(?:\.\d+)?)$")
# the run names' method prefix -> the paper's method name (kdlens.objectives)
_METHOD_TYPE = {"KD": PAPER_NAMES["forward_kl"], "RevKD": PAPER_NAMES["reverse_kl"], "GKD": PAPER_NAMES["jsd"]}
_PAIR_FILES = (
    (re.compile(r"^EM1(_\w+)?\.csv$", re.IGNORECASE), "agreement"),
    (re.compile(r"^EM2(_\w+)?\.csv$", re.IGNORECASE), "agreement2"),
    (re.compile(r"^BLEU(_\w+)?\.csv$", re.IGNORECASE), "fidelity"),
    (re.compile(r"^BLEU2(_\w+)?\.csv$", re.IGNORECASE), "fidelity2"),
)
_AVERAGE_TOLERANCE = 0.0051  # the released Average is the task mean rounded to 2 decimals


@dataclass(frozen=True)
class ResultTables:
    """A study's tidy tables (see :mod:`kdlens.stats.schema`). ``agreement2``/``fidelity2`` are the
    paper's second, undocumented variants (EM2, BLEU2); ``notes`` lists what the loader decided;
    ``paper_release``: the tables are the paper's released CSVs (the report then compares them with
    the poster); ``items``: per-item teacher-student pairs for the error analysis
    (:mod:`kdlens.stats.error_analysis`), when the results have them."""

    scores: pl.DataFrame
    agreement: pl.DataFrame | None = None
    fidelity: pl.DataFrame | None = None
    agreement2: pl.DataFrame | None = None
    fidelity2: pl.DataFrame | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    paper_release: bool = False
    items: pl.DataFrame | None = None


PaperResults = ResultTables


def teacher_name(raw: str | None) -> str | None:
    """The paper's teacher cell -> teacher model: ``-`` is none, a ``_suffix`` is a checkpoint tag."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw in ("", "-"):
        return None
    return raw.split("_", 1)[0]


def parse_run_name(name: str) -> dict:
    """``student_RevKD_temp_2.0`` -> method RevKD, temperature 2.0, teacher_kind task_aware;
    ``BaseModel``/``SFT`` -> the baseline with no temperature. Raises KdlensError otherwise."""
    name = name.strip()
    if name in ("BaseModel", "SFT"):
        return {"method": name, "temperature": None, "teacher_kind": None}
    match = _RUN.match(name)
    if match is None:
        raise KdlensError(
            f"run name {name!r} is not BaseModel, SFT or student_{{KD|RevKD|GKD}}"
            "[_base_teacher]_temp_{T}"
        )
    return {
        "method": _METHOD_TYPE[match["kd"]],
        "temperature": float(match["t"]),
        "teacher_kind": "task_unaware" if match["base"] else "task_aware",
    }


def _columns_by_lower(df: pl.DataFrame, path: Path, required: tuple[str, ...]) -> dict[str, str]:
    lower = {c.strip().lower(): c for c in df.columns}
    missing = [r for r in required if r not in lower]
    if missing:
        raise KdlensError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
    return lower


def _task_columns(df: pl.DataFrame, path: Path, skip: set[str]) -> tuple[list[str], str]:
    tasks = [c for c in df.columns if c.strip().lower() not in skip]
    unknown = [c for c in tasks if not is_known_task(c)]
    if unknown:
        raise KdlensError(
            f"{path}: unknown task column(s) {', '.join(unknown)}; known tasks: {', '.join(TASKS)}"
        )
    families = {TASKS[canonical_task(c)][1] for c in tasks}
    if len(families) != 1:
        raise KdlensError(f"{path}: task columns mix families {sorted(families)}; one family per file")
    return tasks, families.pop()


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=None)
    except Exception as exc:  # polars raises several types; the user needs the file and the cause
        raise KdlensError(f"{path}: could not be read as CSV: {exc}") from exc


def _number(path: Path, row: int, column: str, value) -> float:
    """A numeric cell as a float; a blank or non-numeric cell is a KdlensError naming file, row and column."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise KdlensError(f"{path}, data row {row}: empty {column} cell")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KdlensError(f"{path}, data row {row}: {column} cell {value!r} is not a number; "
                          "fix the cell or drop the row") from None


def _text(path: Path, row: int, column: str, value) -> str:
    """A name cell, stripped; a blank cell is a KdlensError naming file, row and column."""
    if value is None or not str(value).strip():
        raise KdlensError(f"{path}, data row {row}: empty {column} cell")
    return str(value).strip()


def read_score_file(path: Path) -> tuple[pl.DataFrame, list[str]]:
    """One released score file -> tidy score rows (with the reported Average as task ``average``)."""
    df = _read_csv(path)
    cols = _columns_by_lower(df, path, ("teacher", "student", "method"))
    tasks, family = _task_columns(df, path, {"teacher", "student", "method", "average"})
    has_average = "average" in cols
    rows, notes = [], []
    for i, rec in enumerate(df.iter_rows(named=True)):
        try:
            run = parse_run_name(str(rec[cols["method"]]))
        except KdlensError as exc:
            raise KdlensError(f"{path}, data row {i + 1}: {exc}") from None
        raw_teacher = rec[cols["teacher"]]
        base = {
            "teacher": teacher_name(raw_teacher) if run["method"] not in ("BaseModel", "SFT") else None,
            "student": _text(path, i + 1, cols["student"], rec[cols["student"]]),
            **run,
            "noise_sigma": 0.0,
            "family": family,
            "run_name": rec[cols["method"]].strip(),
            "teacher_checkpoint": None if raw_teacher in (None, "-") else raw_teacher.strip(),
            "source_file": path.name,
        }
        values = {canonical_task(col): _number(path, i + 1, col, rec[col]) for col in tasks}
        for task, value in values.items():
            rows.append({**base, "task": task, "score": value})
        if has_average and rec[cols["average"]] is not None and str(rec[cols["average"]]).strip():
            reported = _number(path, i + 1, cols["average"], rec[cols["average"]])
            mean = sum(values.values()) / len(values)
            if abs(mean - reported) > _AVERAGE_TOLERANCE:
                notes.append(
                    f"{path.name} row {i + 1}: reported Average {reported} differs from the task "
                    f"mean {mean:.4f}; the reported value is used as the paper did"
                )
            rows.append({**base, "task": AVERAGE_TASK, "score": reported})
    schema = {
        "teacher": pl.String, "student": pl.String, "method": pl.String,
        "temperature": pl.Float64, "teacher_kind": pl.String, "noise_sigma": pl.Float64,
        "family": pl.String, "run_name": pl.String, "teacher_checkpoint": pl.String,
        "source_file": pl.String, "task": pl.String, "score": pl.Float64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema), notes


def read_pair_metric_file(path: Path, value: str) -> pl.DataFrame:
    """One released EM*/BLEU* file -> tidy rows teacher, student, method (SFT/KD), task, family, value."""
    df = _read_csv(path)
    cols = _columns_by_lower(df, path, ("teacher", "student", "method"))
    tasks, family = _task_columns(df, path, {"teacher", "student", "method", "pair"})
    rows = []
    for i, rec in enumerate(df.iter_rows(named=True)):
        method = str(rec[cols["method"]]).strip()
        if method not in ("SFT", "KD"):
            raise KdlensError(f"{path}, data row {i + 1}: Method must be SFT or KD, got {method!r}")
        for col in tasks:
            rows.append(
                {
                    "teacher": teacher_name(rec[cols["teacher"]]),
                    "student": _text(path, i + 1, cols["student"], rec[cols["student"]]),
                    "method": method,
                    "task": canonical_task(col),
                    "family": family,
                    value: _number(path, i + 1, col, rec[col]),
                }
            )
    return pl.DataFrame(rows)


def bundled_paper_results() -> Path:
    """The folder of the paper's released CSVs that ships with kdlens."""
    from importlib import resources

    return Path(str(resources.files("kdlens.stats").joinpath("paper_data")))


def load_paper_results(directory: str | Path | None = None) -> ResultTables:
    """Read every released CSV in ``directory`` (default: the copy that ships with kdlens) into tidy
    tables (scores, agreement = EM1, agreement2 = EM2, fidelity = BLEU, fidelity2 = BLEU2), validated."""
    root = Path(directory) if directory is not None else bundled_paper_results()
    if not root.is_dir():
        raise KdlensError(f"{root}: not a directory; point --paper-results at the released CSV folder")
    csvs = sorted(root.glob("*.csv"))
    if not csvs:
        raise KdlensError(f"{root}: no .csv files; expected the paper's released result tables")
    score_frames, notes = [], []
    pair_frames: dict[str, list[pl.DataFrame]] = {}
    for path in csvs:
        kind = next((k for pattern, k in _PAIR_FILES if pattern.match(path.name)), None)
        if kind is not None:
            value = "agreement" if kind.startswith("agreement") else "fidelity"
            pair_frames.setdefault(kind, []).append(read_pair_metric_file(path, value))
            continue
        header = {c.strip().lower() for c in _read_csv(path).columns}
        if {"teacher", "student", "method"} <= header and "pair" not in header:
            frame, file_notes = read_score_file(path)
            score_frames.append(frame)
            notes.extend(file_notes)
            if frame.is_empty():
                notes.append(f"{path.name}: a header and no data rows; it contributes no scores")
        elif any(is_known_task(c) for c in header):  # task columns: meant as a score table
            _columns_by_lower(_read_csv(path), path, ("teacher", "student", "method"))
        else:
            notes.append(f"{path.name}: not a score or agreement/fidelity table; not read")
    if not score_frames:
        raise KdlensError(f"{root}: no score table (Teacher, Student, Method, task columns) found")
    scores = validate_results(pl.concat(score_frames, how="vertical"))
    tables = {}
    for kind, frames in pair_frames.items():
        value = "agreement" if kind.startswith("agreement") else "fidelity"
        tables[kind] = validate_pair_metric(pl.concat(frames, how="vertical"), value)
    return ResultTables(
        scores=scores,
        agreement=tables.get("agreement"),
        fidelity=tables.get("fidelity"),
        agreement2=tables.get("agreement2"),
        fidelity2=tables.get("fidelity2"),
        source=f"the paper's released results ({root})",
        notes=tuple(notes),
        paper_release=True,
    )
