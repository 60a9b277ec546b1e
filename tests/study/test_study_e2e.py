"""The reduced study (preset ``smoke``: pretrained bases, two students, two seeds, two objectives,
one temperature, few steps) runs end to end on CPU and writes its report; a runner killed mid-way
finishes the study on the next run with results identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from kdlens.study import load_study_config, plan_study
from kdlens.study.runner import describe_plan, run_study, unit_dir, unit_result

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cfg = load_study_config("smoke")
    outcome = run_study(cfg, out, progress=False, echo=lambda s: None)
    assert outcome.ok, (outcome.failed, outcome.blocked)
    return cfg, out, outcome


def _tables(study_dir: Path) -> dict:
    return {n: pl.read_parquet(study_dir / "results" / f"{n}.parquet")
            for n in ("scores", "agreement", "fidelity")}


def test_study_runs_end_to_end_and_writes_the_report(finished_study):
    cfg, out, outcome = finished_study
    plan = plan_study(cfg)
    assert len(outcome.done) == len(plan.units) and not outcome.skipped
    report = (out / "report" / "report.md").read_text()
    assert "Hypothesis tests" in report
    assert "## Findings" in report and "Scores of every model and configuration" in report
    assert "Paired tests over seeds" in report and "1 teacher," in report
    assert (out / "report" / "report.html").stat().st_size > 1000
    assert list((out / "report" / "figures").glob("*.png"))
    tables = _tables(out)
    scores = tables["scores"]
    # every evaluated model has a score on the synthetic task, within 0..100
    assert scores.height == len(plan.of_kind("eval"))
    assert scores["score"].is_between(0, 100).all()
    assert set(scores["method"]) == {"BaseModel", "SFT", "SeqKD", "RevKD"}
    kd = scores.filter(pl.col("method").is_in(["SeqKD", "RevKD"]))
    assert kd["teacher"].to_list() == ["tiny-teacher"] * kd.height
    # every student-side configuration once per seed; the teacher's SFT once; bases without a seed
    students = scores.filter(pl.col("method") != "BaseModel") .filter(pl.col("student") != "tiny-teacher")
    per_config = students.group_by(["student", "method", "temperature", "noise_sigma", "teacher_kind"]).agg(
        pl.col("seed").sort())
    assert all(seeds.to_list() == [0, 1] for seeds in per_config["seed"]), per_config
    assert scores.filter((pl.col("student") == "tiny-teacher") & (pl.col("method") == "SFT")).height == 1
    assert scores.filter(pl.col("method") == "BaseModel")["seed"].is_null().all()
    # sizes come from the models themselves: the smaller config has fewer parameters
    sizes = dict(scores.filter(pl.col("method") == "SFT").select("student", "student_size_b").iter_rows())
    assert sizes["tiny-s1"] < sizes["tiny-s2"] < sizes["tiny-teacher"]
    # agreement and fidelity: one row per compared student (SFT students and KD students)
    assert tables["fidelity"].height == len(plan.of_kind("compare"))
    assert tables["fidelity"]["fidelity"].is_between(0, 100).all()
    # the error analysis: every compared item, labelled with its run, and its section in the report
    items = pl.read_parquet(out / "results" / "items.parquet")
    n_items = {u.id: pl.read_parquet(Path(unit_result(out, u.deps["student_eval"])["result"]["eval_dir"])
                                     / "generations.parquet").height for u in plan.of_kind("compare")}
    assert items.height == sum(n_items.values())
    assert set(items["method"]) == {"SFT", "SeqKD", "RevKD"} and set(items["seed"]) == {0, 1}
    assert "## Error analysis: per-item correctness vs fidelity" in report
    assert (out / "report" / "tables" / "error_correlations.csv").is_file()


def test_token_agreement_from_the_teachers_picks_equals_running_both_models(finished_study):
    """Each teacher's eval unit computes its argmaxes once; a compare unit's token agreement from them
    equals token_agreement run on both models (pinned against unbatched transformers forwards in
    tests/train/test_token_agreement.py)."""
    from kdlens.eval.token_agreement import token_agreement

    cfg, out, _ = finished_study
    plan = plan_study(cfg)
    units = plan.by_id()
    teacher_evals = {u.deps["teacher_eval"] for u in plan.of_kind("compare")}
    for e in plan.of_kind("eval"):
        has_picks = "teacher_picks" in unit_result(out, e.id)["result"]
        assert has_picks == (e.id in teacher_evals), e.label
    compare = next(u for u in plan.of_kind("compare") if units[u.params["of"]].kind == "kd")
    t_dir = unit_result(out, compare.deps["teacher_eval"])["result"]["eval_dir"]
    s_dir = unit_result(out, compare.deps["student_eval"])["result"]["eval_dir"]
    want = token_agreement(t_dir, s_dir)
    got = {r["task"]: r for r in unit_result(out, compare.id)["result"]["by_task"]}
    assert set(got) == set(want)
    for task, v in want.items():
        assert got[task]["token_agreement"] == pytest.approx(v["token_agreement"], abs=1e-12)


def test_bases_are_pretrained_on_the_corpus_and_fine_tuning_starts_from_them(finished_study):
    import torch
    from safetensors.torch import load_file

    cfg, out, _ = finished_study
    plan = plan_study(cfg)
    bases = {u.params["model"]: unit_result(out, u.id) for u in plan.of_kind("base")}
    task = unit_result(out, plan.of_kind("task")[0].id)["result"]
    corpus = json.loads(Path(task["corpus_file"]).read_text())
    assert len(corpus) == cfg.task.corpus_docs and all(r["output"] == "" for r in corpus)
    for name, rec in bases.items():
        res = rec["result"]
        assert res["pretrain_steps"] == cfg.pretrain["max_steps"]
        run = Path(rec["result"]["model"]).parent  # the pretraining run folder
        run_cfg = json.loads((run / "result.json").read_text())["config"]
        assert run_cfg["data"] == task["corpus_file"] and run_cfg["template"] == "text"
        init = load_file(str(Path(res["tokenizer"]) / "model.safetensors"))
        trained = load_file(str(Path(res["model"]) / "model.safetensors"))
        assert any(not torch.equal(init[k], trained[k]) for k in init), f"{name}: pretraining changed nothing"
    for u in plan.of_kind("sft") + plan.of_kind("kd"):
        student = u.params.get("student", u.params.get("model"))
        run_cfg = json.loads((unit_dir(out, u.id) / "run" / "result.json").read_text())["config"]
        assert run_cfg["student"] == bases[student]["result"]["model"], u.label  # starts from its base
        assert run_cfg["seed"] == u.params["seed"]


def test_failed_pretraining_blocks_its_dependents_with_the_cause(tmp_path):
    from kdlens.study.config import study_config_from_dict

    bad = study_config_from_dict({
        "task": {"kind": "synthetic", "n_train": 40, "n_test": 4, "corpus_docs": 20},
        "models": {"teachers": ["tiny-teacher"], "students": ["tiny-s1"]},
        "grid": {"objectives": ["forward_kl"], "temperatures": [1.0], "noise_sigmas": [0.0],
                 "task_unaware": False},
        "pretrain": {"max_steps": 1, "val_size": 0, "learning_rate_typo": 1},
        "train": {"lora": False, "max_steps": 1, "val_size": 0},
    })
    lines = []
    outcome = run_study(bad, tmp_path / "bad", progress=False, echo=lines.append)
    assert not outcome.ok
    assert {i.split("-")[0] for i in outcome.failed} == {"base"}
    assert {i.split("-")[0] for i in outcome.blocked} >= {"sft", "kd", "eval", "compare", "report"}
    assert any("learning_rate_typo" in line for line in lines), "the failure's cause is shown"
    assert any(line.startswith("[blocked]") and "failed" in line for line in lines)


def test_rerun_skips_finished_work(finished_study):
    cfg, out, _ = finished_study
    before = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")}
    outcome = run_study(cfg, out, progress=False, echo=lambda s: None)
    assert outcome.ok and not outcome.done and len(outcome.skipped) == len(before)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/unit.json")}
    assert "pending" not in describe_plan(plan_study(cfg), out)


def test_killed_runner_resumes_to_identical_results(finished_study, tmp_path):
    cfg, reference, _ = finished_study
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kdlens", "study", "smoke", "-o", str(out), "--no-progress"]
    runner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    plan = plan_study(cfg)
    kd_ids = [u.id for u in plan.of_kind("kd")]
    deadline = time.monotonic() + 300
    try:  # kill while KD training is under way: at least one SFT finished, not every KD unit
        while time.monotonic() < deadline:
            done = [u.id for u in plan.units if unit_result(out, u.id) is not None]
            if any(i.startswith("sft-") for i in done) and (out / "units").is_dir() and any(
                    (out / "units" / i).is_dir() for i in kd_ids):
                break
            assert runner.poll() is None, "the runner ended before it could be killed"
            time.sleep(0.2)
        os.killpg(runner.pid, signal.SIGKILL)
    finally:
        runner.wait()
    partial = [u.id for u in plan.units if unit_result(out, u.id) is not None]
    assert 0 < len(partial) < len(plan.units)
    time.sleep(0.5)  # unit processes die with their parent
    outcome = run_study(cfg, out, progress=False, echo=lambda s: None)
    assert outcome.ok and set(outcome.skipped) == set(partial)
    got, want = _tables(out), _tables(reference)
    for name in want:
        assert got[name].equals(want[name]), name
    for u in plan.of_kind("eval"):
        a = pl.read_parquet(Path(unit_result(out, u.id)["result"]["eval_dir"]) / "generations.parquet")
        b = pl.read_parquet(Path(unit_result(reference, u.id)["result"]["eval_dir"]) / "generations.parquet")
        assert a["output"].to_list() == b["output"].to_list(), u.label


def test_failed_unit_blocks_its_dependents_and_is_reported(tmp_path):
    from kdlens.study.config import study_config_from_dict

    bad = study_config_from_dict({
        "task": {"kind": "synthetic", "n_train": 40, "n_test": 4},
        "models": {"teachers": ["tiny-teacher"], "students": ["tiny-s1"]},
        "grid": {"objectives": ["forward_kl"], "temperatures": [1.0], "noise_sigmas": [0.0],
                 "task_unaware": False},
        "train": {"lora": False, "max_steps": 1, "val_size": 0, "nonsense_key": 1},
    })
    lines = []
    outcome = run_study(bad, tmp_path / "bad", progress=False, echo=lines.append)
    assert not outcome.ok
    assert {i.split("-")[0] for i in outcome.failed} == {"sft"}
    assert any(i.startswith("kd-") for i in outcome.blocked)
    assert any("nonsense_key" in line for line in lines), "the failure's cause is shown"
    rec = json.loads((tmp_path / "bad" / "plan.json").read_text())
    assert len(rec["units"]) == len(plan_study(bad).units)
