"""The task registry and every task's loader, on fixture files in each family's real layout."""

import json

import pytest

from eval_fixtures import (COMMONSENSE_RECORDS, INSTRUCT_RECORDS, MATH_RECORDS, write_instruct_dir,
                      write_llm_adapters_dir)
from kdlens.errors import KdlensError
from kdlens.eval.tasks import get_task, list_tasks, resolve_tasks

PAPER_SIZES = {"gsm8k": 1319, "svamp": 1000, "multiarith": 600, "singleeq": 508, "addsub": 395,
               "aqua": 254, "boolq": 3270, "piqa": 1838, "siqa": 1954, "hellaswag": 10042,
               "winogrande": 1267, "arc_challenge": 1172, "arc_easy": 2376, "obqa": 500}
FOLDER_OF = {"gsm8k": "gsm8k", "svamp": "SVAMP", "multiarith": "MultiArith", "singleeq": "SingleEq",
             "addsub": "AddSub", "aqua": "AQuA", "boolq": "boolq", "piqa": "piqa", "siqa": "social_i_qa",
             "hellaswag": "hellaswag", "winogrande": "winogrande", "arc_challenge": "ARC-Challenge",
             "arc_easy": "ARC-Easy", "obqa": "openbookqa"}
INSTRUCT_FILE_OF = {"dolly": "dolly/valid.jsonl", "self_inst": "self-inst/valid.jsonl",
                    "vicuna": "vicuna/valid.jsonl", "sinst": "sinst/11_/valid.jsonl",
                    "uinst": "uinst/11_/valid.jsonl"}


def test_registry_holds_the_papers_tasks_with_sizes_and_rules():
    assert [t.name for t in list_tasks("math")] == ["gsm8k", "svamp", "multiarith", "singleeq", "addsub", "aqua"]
    assert len(list_tasks("commonsense")) == 8 and len(list_tasks("instruct")) == 5
    for name, size in PAPER_SIZES.items():
        task = get_task(name)
        assert task.paper_size == size and task.metric == "accuracy"
        # the paper's rule per task (paper.md section 5): last number for math, AQuA's first
        # letter, the first of the task's own labels for commonsense
        expected = {"aqua": ("first_match", ("A", "B", "C", "D", "E")),
                    "boolq": ("first_match", ("true", "false")),
                    "piqa": ("first_match", ("solution1", "solution2")),
                    "hellaswag": ("first_match", ("ending1", "ending2", "ending3", "ending4")),
                    "winogrande": ("first_match", ("option1", "option2"))}.get(
            name, ("first_match", tuple(f"answer{i}" for i in range(1, 6)))
            if task.family == "commonsense" else ("last_number", ()))
        assert (task.rule.kind, task.rule.labels) == expected, name
    assert all(t.metric == "rouge_l" and t.rule is None for t in list_tasks("instruct"))
    assert get_task("synthetic").rule == get_task("gsm8k").rule


@pytest.mark.parametrize("alias,name", [("ARC-Easy", "arc_easy"), ("social_i_qa", "siqa"),
                                        ("openbookqa", "obqa"), ("SVAMP", "svamp"), ("GSM8K", "gsm8k"),
                                        ("ARC-Challenge", "arc_challenge"), ("S-NI", "sinst")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_resolve_tasks_families_and_errors():
    names = [t.name for t in resolve_tasks("math,commonsense")]
    assert names == list(PAPER_SIZES)
    assert [t.name for t in resolve_tasks("gsm8k, ARC-Easy,gsm8k")] == ["gsm8k", "arc_easy"]
    assert "synthetic" not in [t.name for t in resolve_tasks("all")]
    assert len(resolve_tasks("all")) == 19
    with pytest.raises(KdlensError, match="unknown task 'gsm9k'.*known tasks"):
        resolve_tasks("math,gsm9k")
    with pytest.raises(KdlensError, match="no tasks"):
        resolve_tasks(" , ")


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_llm_adapters_tasks_load_from_dataset_folder_layout(tmp_path, name):
    root = write_llm_adapters_dir(tmp_path / "dataset")
    records = {**MATH_RECORDS, **COMMONSENSE_RECORDS}[FOLDER_OF[name]]
    examples = get_task(name).load(data_dir=root)
    assert [e.id for e in examples] == [str(i) for i in range(len(records))]
    assert [e.instruction for e in examples] == [r["instruction"] for r in records]
    assert [e.gold for e in examples] == [r["answer"] for r in records]  # never the output field
    assert all(e.input == "" and e.references == (e.gold,) for e in examples)
    # The same file given directly, and as JSON Lines / Parquet.
    direct = get_task(name).load(root / FOLDER_OF[name] / "test.json")
    assert direct == examples
    jsonl = tmp_path / f"{name}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert get_task(name).load(jsonl) == examples
    import polars as pl

    pq = tmp_path / f"{name}.parquet"
    pl.DataFrame(records).write_parquet(pq)
    assert get_task(name).load(pq) == examples


def test_llm_adapters_ids_numeric_answers_and_limit(tmp_path):
    path = tmp_path / "gsm.json"
    path.write_text(json.dumps([
        {"id": "q7", "instruction": "a", "input": "", "output": "", "answer": 2.5},
        {"id": "q8", "instruction": "b", "input": "ctx", "output": "", "answer": 3},
    ]))
    ex = get_task("gsm8k").load(path)
    assert [(e.id, e.gold, e.input) for e in ex] == [("q7", "2.5", ""), ("q8", "3.0", "ctx")]
    assert len(get_task("gsm8k").load(path, limit=1)) == 1


@pytest.mark.parametrize("name", list(INSTRUCT_FILE_OF))
def test_instruct_tasks_load_minillm_layout_with_reference_lists(tmp_path, name):
    root = write_instruct_dir(tmp_path / "data")
    records = INSTRUCT_RECORDS[INSTRUCT_FILE_OF[name]]
    examples = get_task(name).load(data_dir=root)
    assert len(examples) == len(records)
    for ex, rec in zip(examples, records):
        refs = [rec["output"]] if isinstance(rec["output"], str) else rec["output"]
        assert ex.references == tuple(refs) and ex.gold == refs[0]
        assert ex.instruction == rec["instruction"] and ex.input == rec["input"]


def test_instruct_bad_records_are_explained(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"instruction": "a", "input": ""}) + "\n")
    with pytest.raises(KdlensError, match="record 0 lacks output"):
        get_task("dolly").load(path)
    path.write_text("{not json\n")
    with pytest.raises(KdlensError, match="not valid JSON"):
        get_task("dolly").load(path)


def test_missing_data_and_offline_hub_id_explain_how_to_point_at_files(tmp_path):
    with pytest.raises(KdlensError, match=r"--data gsm8k=FILE.*--data-dir DIR holding gsm8k/test.json"):
        get_task("gsm8k").load()
    with pytest.raises(KdlensError, match=r"no test file under .*pass --data arc_easy=FILE"):
        get_task("ARC-Easy").load(data_dir=tmp_path)
    with pytest.raises(KdlensError, match=r"Hugging Face hub.*offline|hub access is off.*local file"):
        get_task("gsm8k").load("someone/gsm8k-test")
    with pytest.raises(KdlensError, match="records lack the field"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"instruction": "x", "output": "y"}]))
        get_task("boolq").load(bad)


def test_synthetic_task_uses_make_task_test_split(tmp_path):
    from kdlens.data.synthetic import make_task, write_task

    task = get_task("synthetic")
    expected = make_task(seed=3, n_train=0, n_test=5).test
    examples = task.load(seed=3, n_test=5)
    assert [(e.instruction, e.gold) for e in examples] == [(r["instruction"], r["answer"]) for r in expected]
    assert len(task.load()) == 300  # make_task's default test size
    paths = write_task(tmp_path / "syn", make_task(seed=4, n_train=10, n_test=4), vocab_size=300)
    from_dir = task.load(data_dir=tmp_path / "syn")
    assert [e.gold for e in from_dir] == [r["answer"] for r in make_task(seed=4, n_train=10, n_test=4).test]
    assert task.load(paths["test"]) == from_dir
    with pytest.raises(KdlensError, match="unknown synthetic task option"):
        task.load(sead=1)
