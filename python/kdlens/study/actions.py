"""What each kind of study unit does. Each action reads its dependencies' records and writes its
artifacts into its own unit folder; the worker records the returned dict in ``unit.json``.

task: the data (synthetic: generated train/test files and a locally trained tokenizer).
base: the base model (tiny configs: a seeded random init saved as a folder; otherwise the path).
sft / kd: a training run (kdlens.train), resumed from its checkpoints when it was interrupted.
eval: zero-shot evaluation of a trained or base model (kdlens.eval.run).
compare: agreement and BLEU fidelity of a student against the teacher it learned from.
report: the tidy results, agreement and fidelity tables, statistics and the report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdlens.errors import KdlensError
from kdlens.study.config import StudyConfig
from kdlens.study.plan import Plan, Unit


@dataclass
class UnitContext:
    study_dir: Path
    unit: Unit
    cfg: StudyConfig
    plan: Plan

    @property
    def dir(self) -> Path:
        from kdlens.study.runner import unit_dir

        return unit_dir(self.study_dir, self.unit.id)

    def result_of(self, unit_id: str) -> dict:
        from kdlens.study.runner import unit_result

        rec = unit_result(self.study_dir, unit_id)
        if rec is None:
            raise KdlensError(f"unit {unit_id} is not finished; run the study again")
        return rec["result"]

    def dep(self, kind: str, index: int = 0) -> dict:
        """The result of this unit's ``index``-th dependency of ``kind``."""
        units = self.plan.by_id()
        found = [d for d in self.unit.deps if units[d].kind == kind]
        return self.result_of(found[index])


# --------------------------------------------------------------------------------------- task
def run_task(ctx: UnitContext) -> dict:
    spec = ctx.cfg.task
    if spec.kind == "synthetic":
        from kdlens.data.synthetic import OPERATIONS, make_task, write_task

        task = make_task(seed=spec.seed, n_train=spec.n_train, n_test=spec.n_test,
                         levels=spec.levels, operations=spec.operations or OPERATIONS,
                         rationale=spec.rationale)
        paths = write_task(ctx.dir / "data" / "synthetic", task)
        return {"train_file": str(paths["train"]), "data_dir": str(ctx.dir / "data"),
                "tokenizer": str(paths["tokenizer"]), "eval_tasks": list(spec.eval_tasks),
                "family": spec.family}
    return {"train_file": str(Path(spec.train_file).resolve()),
            "data_dir": str(Path(spec.eval_data_dir).resolve()) if spec.eval_data_dir else None,
            "tokenizer": None, "eval_tasks": list(spec.eval_tasks), "family": spec.family}


# --------------------------------------------------------------------------------------- base
def run_base(ctx: UnitContext) -> dict:
    from kdlens.models import TINY_CONFIGS

    name = ctx.unit.params["model"]
    task = ctx.dep("task")
    if name in TINY_CONFIGS:
        from kdlens.models import load_tokenizer, make_tiny_model, size_in_billions

        tok = load_tokenizer(task["tokenizer"])
        model = make_tiny_model(name, tok, seed=int(ctx.cfg.base_models.get("seed", 0)))
        out = ctx.dir / "model"
        if not out.is_dir():  # written whole, then renamed: a killed worker leaves no half model
            tmp = ctx.dir / "model.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            tmp.rename(out)
        return {"model": str(out), "adapter": None, "name": name,
                "size_b": size_in_billions(model), "tokenizer": str(out)}
    return {"model": name, "adapter": None, "name": name, "size_b": None,
            "tokenizer": task["tokenizer"] or name}


# --------------------------------------------------------------------------------------- train
def _train(ctx: UnitContext, settings: dict) -> dict:
    from kdlens.train import TrainConfig, train

    task = ctx.dep("task")
    student = ctx.dep("base")
    run_dir = ctx.dir / "run"
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    cfg = TrainConfig.from_dict({
        **ctx.cfg.train, **settings,
        "out_dir": str(run_dir), "data": task["train_file"], "student": student["model"],
        "tokenizer": student["tokenizer"], "resume": resume,
    }, origin=f"study unit {ctx.unit.label}")
    result = train(cfg)
    chosen = result.best_dir or result.final_dir  # the paper keeps the best validation-CE checkpoint
    if cfg.lora:
        return {"model": student["model"], "adapter": str(chosen), "name": student["name"],
                "size_b": student["size_b"], "tokenizer": student["tokenizer"]}
    return {"model": str(chosen), "adapter": None, "name": student["name"],
            "size_b": student["size_b"], "tokenizer": student["tokenizer"]}


def run_sft(ctx: UnitContext) -> dict:
    return _train(ctx, {**ctx.cfg.sft, "mode": "sft", "seed": ctx.unit.params["seed"]})


def run_kd(ctx: UnitContext) -> dict:
    p = ctx.unit.params
    teacher = ctx.result_of(ctx.unit.deps[-1])
    settings = {
        **ctx.cfg.kd, "mode": "kd", "objective": p["objective"], "temperature": p["temperature"],
        "noise_sigma": p["noise_sigma"], "teacher_kind": p["teacher_kind"], "seed": p["seed"],
        "teacher": teacher["model"], "teacher_adapter": teacher["adapter"],
    }
    if p["objective"] == "jsd":  # the paper's GKD: on-policy student samples at rate 0.5
        settings.setdefault("onpolicy_lambda", 0.5)
    out = _train(ctx, settings)
    out.update(teacher=p["teacher"], objective=p["objective"], temperature=p["temperature"],
               noise_sigma=p["noise_sigma"], teacher_kind=p["teacher_kind"])
    return out


# --------------------------------------------------------------------------------------- eval
def run_eval(ctx: UnitContext) -> dict:
    from kdlens.eval.run import evaluate
    from kdlens.study.validate import evaluate_settings

    opts = evaluate_settings(ctx.cfg.evaluate)  # the check --dry-run ran too
    decoding = opts["decoding"]
    task = ctx.dep("task")
    trained = ctx.result_of(ctx.unit.params["of"])
    result = evaluate(trained["model"], task["eval_tasks"], ctx.dir / "eval", adapter=trained["adapter"],
                      decoding=decoding, data_dir=task["data_dir"], limit=opts["limit"],
                      dtype=opts["dtype"], name=ctx.unit.params["of"], progress=False,
                      # the prompts the models were trained on, unless [evaluate] names a template
                      template=opts["template"] or ctx.cfg.train.get("template", "alpaca"),
                      response_cut=opts["response_cut"])
    scores = [{"task": r["task"], "family": r["family"], "score": r["score"]}
              for r in result.results.iter_rows(named=True) if r["task"] != "Average"]
    return {"eval_dir": str(ctx.dir / "eval"), "scores": scores}


# --------------------------------------------------------------------------------------- compare
def run_compare(ctx: UnitContext) -> dict:
    from kdlens.metrics.pairs import compare
    from kdlens.io import write_table_atomic

    teacher_eval = ctx.result_of(ctx.unit.deps[0])
    student_eval = ctx.result_of(ctx.unit.deps[1])
    table = compare(teacher_eval["eval_dir"], student_eval["eval_dir"])
    write_table_atomic(table, ctx.dir / "compare.parquet")
    rows = [{"task": r["task"], "family": r["family"], "agreement": r["agreement"],
             "fidelity": r["fidelity"]} for r in table.iter_rows(named=True) if r["task"] != "Average"]
    return {"table": str(ctx.dir / "compare.parquet"), "by_task": rows,
            "bleu_signature": table["bleu_signature"][0]}


# --------------------------------------------------------------------------------------- report
def run_report(ctx: UnitContext) -> dict:
    from kdlens.study.collect import collect_tables, write_report

    tables = collect_tables(ctx.study_dir, ctx.plan)
    report_dir = ctx.study_dir / "report"
    paths = write_report(tables, report_dir, ctx.cfg)
    return {"report_dir": str(report_dir), **{k: str(v) for k, v in paths.items()}}


ACTIONS: dict[str, Callable[[UnitContext], dict]] = {
    "task": run_task, "base": run_base, "sft": run_sft, "kd": run_kd, "eval": run_eval,
    "compare": run_compare, "report": run_report,
}
