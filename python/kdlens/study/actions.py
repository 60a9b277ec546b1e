"""What each kind of study unit does. Each action reads its dependencies' records and writes its
artifacts into its own unit folder; the worker records the returned dict in ``unit.json``.

task: the data (synthetic: generated train/test files, the generic pretraining corpus and a locally
  trained tokenizer).
base: the base model. Tiny configs: a seeded random init, pretrained on the generic corpus (a
  kdlens.train run, resumed from its checkpoints when interrupted; ``[pretrain] max_steps = 0``
  keeps the random init); any other model: its folder or hub id, already pretrained.
sft / kd: a training run (kdlens.train) from the student's base, resumed from its checkpoints when it
  was interrupted.
eval: zero-shot evaluation of a trained or base model (kdlens.eval.run).
compare: agreement and BLEU fidelity of a student against the teacher it learned from.
report: the tidy results, agreement and fidelity tables, statistics and the report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.study.config import StudyConfig
from kdlens.study.plan import Plan, Unit
from kdlens.study.store import unit_dir, unit_result


@dataclass
class UnitContext:
    study_dir: Path
    unit: Unit
    cfg: StudyConfig
    plan: Plan

    @property
    def dir(self) -> Path:
        return unit_dir(self.study_dir, self.unit.id)

    def result_of(self, unit_id: str) -> dict:
        rec = unit_result(self.study_dir, unit_id)
        if rec is None:
            raise KdlensError(f"unit {unit_id} is not finished; run the study again")
        return rec["result"]

    def dep(self, role: str) -> dict:
        """The result of the dependency this unit names ``role`` (``"task"``, ``"teacher"``, ...)."""
        if role not in self.unit.deps:
            raise KdlensError(f"unit {self.unit.label} has no dependency {role!r} (it has: "
                              f"{', '.join(self.unit.deps)}); re-plan the study")
        return self.result_of(self.unit.deps[role])


# --------------------------------------------------------------------------------------- task
def run_task(ctx: UnitContext) -> dict:
    spec = ctx.cfg.task
    if spec.kind == "synthetic":
        from kdlens.data.synthetic import (
            OPERATIONS,
            make_task,
            write_pretraining_corpus,
            write_task,
        )

        task = make_task(seed=spec.seed, n_train=spec.n_train, n_test=spec.n_test,
                         levels=spec.levels, operations=spec.operations or OPERATIONS,
                         rationale=spec.rationale)
        corpus = write_pretraining_corpus(ctx.dir / "data" / "corpus.json", seed=spec.seed,
                                          n_docs=spec.corpus_docs)
        # The tokenizer belongs to the base models: trained on the generic corpus and the task's
        # training texts (never the test split), like a base LM's tokenizer trained on broad text.
        paths = write_task(ctx.dir / "data" / "synthetic", task, corpus=corpus["texts"])
        return {"train_file": str(paths["train"]), "data_dir": str(ctx.dir / "data"),
                "tokenizer": str(paths["tokenizer"]), "eval_tasks": list(spec.eval_tasks),
                "family": spec.family, "corpus_file": str(corpus["path"])}
    return {"train_file": str(Path(spec.train_file).resolve()),
            "data_dir": str(Path(spec.eval_data_dir).resolve()) if spec.eval_data_dir else None,
            "tokenizer": None, "eval_tasks": list(spec.eval_tasks), "family": spec.family,
            "corpus_file": None}


# --------------------------------------------------------------------------------------- base
PRETRAIN_DEFAULTS = {"mode": "sft", "template": "text", "lora": False, "max_steps": 0, "seed": 0,
                     "progress": False}


def run_base(ctx: UnitContext) -> dict:
    from kdlens.models import TINY_CONFIGS

    name = ctx.unit.params["model"]
    task = ctx.dep("task")
    if name not in TINY_CONFIGS:  # a real base LM: already pretrained
        return {"model": name, "adapter": None, "name": name, "size_b": None,
                "tokenizer": task["tokenizer"] or name, "pretrain_steps": None}
    from kdlens.models import load_tokenizer, make_tiny_model, size_in_billions

    settings = {**PRETRAIN_DEFAULTS, **ctx.unit.params["pretrain"]}
    tok = load_tokenizer(task["tokenizer"])
    init = ctx.dir / "init"
    if not init.is_dir():  # written whole, then renamed: a killed worker leaves no half model
        model = make_tiny_model(name, tok, seed=int(settings["seed"]))
        tmp = ctx.dir / "init.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        tmp.rename(init)
    size_b = _size_b(init, size_in_billions)
    if not settings["max_steps"]:
        return {"model": str(init), "adapter": None, "name": name, "size_b": size_b,
                "tokenizer": str(init), "pretrain_steps": 0}
    if not task.get("corpus_file"):
        raise KdlensError(f"base {name}: pretraining needs the generic corpus of a synthetic task; "
                          "set [pretrain] max_steps = 0 for task.kind = 'files'")
    chosen = _train_run(ctx, settings, data=task["corpus_file"], start=str(init), tokenizer=str(init))
    return {"model": str(chosen), "adapter": None, "name": name, "size_b": size_b,
            "tokenizer": str(init), "pretrain_steps": int(settings["max_steps"])}


def _size_b(folder: Path, size_in_billions) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
    return size_in_billions(model)


# --------------------------------------------------------------------------------------- train
def _train_run(ctx: UnitContext, settings: dict, *, data: str, start: str, tokenizer: str) -> Path:
    """Run (or resume) one kdlens.train run in this unit's ``run/`` folder; the chosen checkpoint."""
    from kdlens.train import TrainConfig, train

    run_dir = ctx.dir / "run"
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    cfg = TrainConfig.from_dict({
        **settings, "out_dir": str(run_dir), "data": data, "student": start, "tokenizer": tokenizer,
        "resume": resume,
    }, origin=f"study unit {ctx.unit.label}")
    result = train(cfg)
    return Path(result.best_dir or result.final_dir)  # the paper keeps the best validation-CE checkpoint


def _train(ctx: UnitContext, settings: dict) -> dict:
    task = ctx.dep("task")
    student = ctx.dep("base")
    merged = {**ctx.cfg.train, **settings}
    chosen = _train_run(ctx, merged, data=task["train_file"], start=student["model"],
                        tokenizer=student["tokenizer"])
    if merged.get("lora", True):
        return {"model": student["model"], "adapter": str(chosen), "name": student["name"],
                "size_b": student["size_b"], "tokenizer": student["tokenizer"]}
    return {"model": str(chosen), "adapter": None, "name": student["name"],
            "size_b": student["size_b"], "tokenizer": student["tokenizer"]}


def run_sft(ctx: UnitContext) -> dict:
    p = ctx.unit.params
    return _train(ctx, {**p["sft"], **p.get("teacher_sft", {}), "mode": "sft", "seed": p["seed"]})


def run_cache(ctx: UnitContext) -> dict:
    """The teacher's top-k cache over the task's training file, encoded as the KD runs encode it."""
    from kdlens.train import TrainConfig
    from kdlens.train.teacher_cache import TeacherCacheConfig, build_cache

    p = ctx.unit.params
    task, teacher = ctx.dep("task"), ctx.dep("teacher")
    settings = {**ctx.cfg.train, **ctx.cfg.kd}
    defaults = {f: TrainConfig.__dataclass_fields__[f].default for f in ("template", "max_length",
                                                                          "add_special_tokens", "dtype")}
    encoding = {f: settings.get(f, d) for f, d in defaults.items()}
    cfg = TeacherCacheConfig.from_dict({
        **p["teacher_cache"], "out_dir": str(ctx.dir / "cache"), "data": task["train_file"],
        "teacher": teacher["model"], "teacher_adapter": teacher["adapter"], "tokenizer": teacher["tokenizer"],
        "temperatures": p["temperatures"], "progress": False, **encoding}, origin="[teacher_cache]")
    result = build_cache(cfg)
    return {"cache_dir": str(ctx.dir / "cache"), **{k: v for k, v in result.to_dict().items() if k != "out_dir"}}


def run_kd(ctx: UnitContext) -> dict:
    p = ctx.unit.params
    teacher = ctx.dep("teacher")
    settings = {
        **p["kd"], "mode": "kd", "objective": p["objective"], "temperature": p["temperature"],
        "noise_sigma": p["noise_sigma"], "teacher_kind": p["teacher_kind"], "seed": p["seed"],
        "teacher": teacher["model"], "teacher_adapter": teacher["adapter"],
    }
    if "cache" in ctx.unit.deps:  # the teacher's logits come from its cache; the teacher is not loaded
        settings.update(teacher=None, teacher_adapter=None, teacher_cache=ctx.dep("cache")["cache_dir"],
                        onpolicy_lambda=0.0)
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
    trained = ctx.dep("model")
    result = evaluate(trained["model"], task["eval_tasks"], ctx.dir / "eval", adapter=trained["adapter"],
                      decoding=decoding, data_dir=task["data_dir"], limit=opts["limit"],
                      dtype=opts["dtype"], name=ctx.unit.params["of"], progress=False,
                      # the prompts the models were trained on, unless [evaluate] names a template
                      template=opts["template"] or ctx.cfg.train.get("template", "alpaca"),
                      response_cut=opts["response_cut"])
    scores = [{"task": r["task"], "family": r["family"], "score": r["score"]}
              for r in result.results.iter_rows(named=True) if r["task"] != "Average"]
    out = {"eval_dir": str(ctx.dir / "eval"), "scores": scores}
    if ctx.unit.params.get("teacher_picks"):  # a teacher: its side of every student's token agreement
        from kdlens.eval.token_agreement import teacher_picks
        from kdlens.io import write_table_atomic

        picks = write_table_atomic(teacher_picks(ctx.dir / "eval", dtype=opts["dtype"]),
                                   ctx.dir / "teacher_picks.parquet")
        out["teacher_picks"] = str(picks)
    return out


# --------------------------------------------------------------------------------------- compare
def run_compare(ctx: UnitContext) -> dict:
    from kdlens.eval.token_agreement import token_agreement, with_token_agreement
    from kdlens.io import read_table, write_table_atomic
    from kdlens.metrics.pairs import compare
    from kdlens.study.validate import evaluate_settings

    teacher_eval = ctx.dep("teacher_eval")
    student_eval = ctx.dep("student_eval")
    table = compare(teacher_eval["eval_dir"], student_eval["eval_dir"])
    # token-level top-1 agreement along the teacher's generations (percent), beside answer agreement and
    # BLEU; the teacher's argmaxes come from its eval unit, so only the student runs here
    opts = evaluate_settings(ctx.cfg.evaluate)
    picks = teacher_eval.get("teacher_picks")
    table = with_token_agreement(table, token_agreement(teacher_eval["eval_dir"], student_eval["eval_dir"],
                                                        dtype=opts["dtype"],
                                                        teacher_picks=read_table(picks) if picks else None))
    write_table_atomic(table, ctx.dir / "compare.parquet")
    rows = [{"task": r["task"], "family": r["family"], "agreement": r["agreement"],
             "fidelity": r["fidelity"], "token_agreement": r["token_agreement"]}
            for r in table.iter_rows(named=True) if r["task"] != "Average"]
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
    "task": run_task, "base": run_base, "sft": run_sft, "cache": run_cache, "kd": run_kd, "eval": run_eval,
    "compare": run_compare, "report": run_report,
}
