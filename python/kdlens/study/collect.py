"""Gather a finished study's units into the tidy tables kdlens.stats reads, and write the report.

scores: one row per (evaluated model, task): BaseModel rows for every base, SFT rows (one per seed
for students, one for each task-aware teacher), KD rows (one per seed) with their teacher, objective
(as the paper's method name), temperature, noise and teacher kind. ``seed`` marks repeated runs;
the analyses average over it.
agreement / fidelity: one row per (compared student, task) against the teacher it learned from, each
with ``token_agreement`` (token-level top-1 agreement along the teacher's generations, percent).
items: one row per compared item (:func:`kdlens.stats.error_analysis.pair_items` on the two eval
folders of each compare unit), for the report's error analysis.
"""

from __future__ import annotations

from pathlib import Path

from kdlens.study.config import StudyConfig, method_name
from kdlens.study.plan import Plan
from kdlens.study.store import unit_result


def collect_tables(study_dir: Path, plan: Plan) -> dict:
    import polars as pl

    units = plan.by_id()
    results = {u.id: unit_result(study_dir, u.id) for u in plan.units if u.kind != "report"}
    missing = [units[i].label for i, r in results.items() if r is None]
    if missing:
        from kdlens.errors import KdlensError

        raise KdlensError(f"{len(missing)} unit(s) are not finished (e.g. {missing[0]}); run the study again")

    def describe(trained_id: str) -> dict:
        u = units[trained_id]
        res = results[trained_id]["result"]
        row = {"student": u.params.get("student", u.params.get("model")), "teacher": None,
               "temperature": None, "noise_sigma": 0.0, "teacher_kind": None,
               "student_size_b": res.get("size_b"), "run_id": trained_id, "seed": None}
        if u.kind == "base":
            row["method"] = "BaseModel"
        elif u.kind == "sft":
            row.update(method="SFT", seed=u.params["seed"])
        else:
            row.update(method=method_name(u.params["objective"]), teacher=u.params["teacher"],
                       temperature=float(u.params["temperature"]),
                       noise_sigma=float(u.params["noise_sigma"]),
                       teacher_kind=u.params["teacher_kind"], seed=u.params["seed"])
        return row

    score_rows, agree_rows, fid_rows = [], [], []
    for u in plan.of_kind("eval"):
        info = describe(u.params["of"])
        for row in results[u.id]["result"]["scores"]:  # per task; family averages are recomputed
            score_rows.append({**info, **row})
    for u in plan.of_kind("compare"):
        info = {**describe(u.params["of"]), "teacher": u.params["teacher"]}
        for row in results[u.id]["result"]["by_task"]:
            if row["agreement"] is not None:  # ROUGE-L tasks have fidelity but no agreement
                agree_rows.append({**info, **row})
            fid_rows.append({**info, **row})
    items = _items(plan, results, describe)
    schema = {"teacher": pl.String, "student": pl.String, "method": pl.String,
              "temperature": pl.Float64, "noise_sigma": pl.Float64, "teacher_kind": pl.String,
              "student_size_b": pl.Float64, "run_id": pl.String, "seed": pl.Int64, "task": pl.String,
              "family": pl.String}
    def frame(rows, *values):
        return pl.DataFrame(
            [{k: r.get(k) for k in [*schema, *values]} for r in rows],
            schema={**schema, **{v: pl.Float64 for v in values}})
    # token_agreement: token-level top-1 agreement (percent) along the teacher's generations, per run and
    # task, beside answer agreement and BLEU fidelity (null for compare units from before it existed)
    return {"scores": frame(score_rows, "score"),
            "agreement": frame(agree_rows, "agreement", "token_agreement"),
            "fidelity": frame(fid_rows, "fidelity", "token_agreement"), "items": items}


def _items(plan: Plan, results: dict, describe):
    """The per-item pairs of every compare unit, labelled with the compared run."""
    import polars as pl

    from kdlens.stats.error_analysis import pair_items

    frames = []
    for u in plan.of_kind("compare"):
        info = {**describe(u.params["of"]), "teacher": u.params["teacher"]}
        labels = {k: info[k] for k in ("teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind",
                                       "seed")}
        frames.append(pair_items(results[u.deps["teacher_eval"]]["result"]["eval_dir"],
                                 results[u.deps["student_eval"]]["result"]["eval_dir"], **labels))
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def write_report(tables: dict, report_dir: Path, cfg: StudyConfig) -> dict:
    """Save the tidy tables (``<study>/results/*.parquet``, readable by ``kdlens stats``) and write
    the report (report.md, report.html, figures, tables) with kdlens.stats and kdlens.report."""
    from kdlens.io import write_table_atomic
    from kdlens.report import write_report as render
    from kdlens.stats import ResultTables, analyse

    results_dir = Path(report_dir).parent / "results"
    for name, frame in tables.items():
        if frame is not None:
            write_table_atomic(frame, results_dir / f"{name}.parquet")
    result_tables = ResultTables(
        scores=tables["scores"],
        agreement=tables["agreement"] if tables["agreement"].height else None,
        fidelity=tables["fidelity"] if tables["fidelity"].height else None,
        items=tables.get("items"),
        source=f"kdlens study {cfg.name}",
    )
    analysis = analyse(result_tables, seed=0)
    paths = render(analysis, report_dir)
    return {"results_dir": results_dir, **paths}
