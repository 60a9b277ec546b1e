"""kdlens.eval.run end to end on a tiny random model: tables, resume after a kill, CLI, compare."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from eval_fixtures import write_instruct_dir, write_llm_adapters_dir
from kdlens.cli import main
from kdlens.data.prompts import ALPACA
from kdlens.errors import KdlensError
from kdlens.eval.decode import Decoding
from kdlens.eval.resume import PARTS_DIR
from kdlens.eval.run import evaluate
from kdlens.eval.score import score_task
from kdlens.eval.tasks import get_task
from kdlens.metrics.pairs import GENERATIONS, compare

DEC = Decoding(max_new_tokens=10, batch_size=4)


class CountingModel(torch.nn.Module):
    """Wraps a model, counts the prompts it prefills, and can fail after N prefills (a kill)."""

    def __init__(self, model, fail_after=None):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.generation_config = model.generation_config
        self.prefilled = 0
        self.prefills = 0
        self.fail_after = fail_after

    def forward(self, input_ids=None, past_key_values=None, **kw):
        if past_key_values is None:
            if self.fail_after is not None and self.prefills >= self.fail_after:
                raise RuntimeError("killed")
            self.prefills += 1
            self.prefilled += input_ids.shape[0]
        return self.inner(input_ids=input_ids, past_key_values=past_key_values, **kw)


def test_evaluate_writes_scored_tables(tiny_lm, tmp_path):
    model, tok, _ = tiny_lm
    data = write_llm_adapters_dir(tmp_path / "dataset")
    write_instruct_dir(data)
    res = evaluate(model, "math,boolq,sinst", tmp_path / "out", tokenizer=tok, name="tiny",
                   decoding=DEC, data_dir=data, progress=False)
    gens = pl.read_parquet(tmp_path / "out" / GENERATIONS)
    assert gens.height == 7 + 1 + 2
    assert gens.select(["task", "id", "seed"]).is_unique().all()
    assert set(gens.columns) >= {"model", "task", "id", "seed", "prompt", "output", "pred", "gold",
                                 "correct", "prompt_tokens", "output_tokens"}
    gsm = gens.filter(pl.col("task") == "gsm8k").sort("id")
    assert gsm["gold"].to_list() == ["18", "3"]
    assert gsm["prompt"][0] == ALPACA.prompt(
        get_task("gsm8k").load(data_dir=data)[0].instruction, "")
    for row in gens.iter_rows(named=True):
        assert row["output"] == row["raw_output"].split("### Instruction")[0].strip()
        assert 1 <= row["output_tokens"] <= 10 and row["prompt_tokens"] == len(tok(row["prompt"])["input_ids"])
        task = get_task(row["task"])
        pred, correct, score = score_task(task, [row["output"]], [row["gold"]], [row["references"]])
        assert (row["pred"], row["correct"], row["score"]) == (pred[0], correct[0], score[0])
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results.equals(res.results)
    by = {(r["family"], r["task"]): r["score"] for r in results.iter_rows(named=True)}
    for name in ["gsm8k", "svamp", "multiarith", "singleeq", "addsub", "aqua"]:
        assert by[("math", name)] == pytest.approx(gens.filter(pl.col("task") == name)["score"].mean())
    assert by[("math", "Average")] == pytest.approx(np.mean([by[("math", n)] for n in
                                                    ["gsm8k", "svamp", "multiarith", "singleeq", "addsub", "aqua"]]))
    assert "| tiny | math | GSM8K |" in (tmp_path / "out" / "results.md").read_text()
    assert not (tmp_path / "out" / PARTS_DIR).exists()
    # The folder belongs to this run: other decoding settings are refused.
    with pytest.raises(KdlensError, match="different run.*max_new_tokens"):
        evaluate(model, "gsm8k", tmp_path / "out", tokenizer=tok, name="tiny", data_dir=data,
                 decoding=Decoding(max_new_tokens=11), progress=False)


def test_resume_after_kill_does_not_recompute(tiny_lm, tmp_path):
    model, tok, _ = tiny_lm
    opts = {"synthetic": {"seed": 1, "n_test": 20}}
    full = evaluate(model, "synthetic", tmp_path / "full", tokenizer=tok, name="tiny", decoding=DEC,
                    task_options=opts, progress=False, chunk_size=8)
    # Kill in the third chunk (chunks of 8 items = 2 batches of 4; the 5th batch fails).
    dying = CountingModel(model, fail_after=4)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(dying, "synthetic", tmp_path / "run", tokenizer=tok, name="tiny", decoding=DEC,
                 task_options=opts, progress=False, chunk_size=8)
    parts = sorted((tmp_path / "run" / PARTS_DIR).glob("part-*.parquet"))
    assert len(parts) == 2 and not (tmp_path / "run" / GENERATIONS).exists()
    resumed = CountingModel(model)
    res = evaluate(resumed, "synthetic", tmp_path / "run", tokenizer=tok, name="tiny", decoding=DEC,
                   task_options=opts, progress=False, chunk_size=8)
    assert resumed.prefilled == 20 - 16  # only the unfinished chunk's items were generated
    assert res.generations.drop("stop_reason").equals(full.generations.drop("stop_reason"))
    assert res.results.equals(full.results)
    # Nothing left to do: a re-run generates nothing.
    again = CountingModel(model)
    evaluate(again, "synthetic", tmp_path / "run", tokenizer=tok, name="tiny", decoding=DEC,
             task_options=opts, progress=False)
    assert again.prefilled == 0


def test_sampling_with_several_seeds(tiny_lm, tmp_path):
    model, tok, _ = tiny_lm
    dec = Decoding(do_sample=True, seeds=(1, 2), max_new_tokens=8, batch_size=8)
    res = evaluate(model, "synthetic", tmp_path / "s", tokenizer=tok, name="tiny", decoding=dec,
                   task_options={"synthetic": {"n_test": 5}}, progress=False)
    assert res.generations.height == 10 and sorted(res.generations["seed"].unique()) == [1, 2]
    one = res.generations.filter(pl.col("seed") == 1).sort("id")["raw_output"].to_list()
    two = res.generations.filter(pl.col("seed") == 2).sort("id")["raw_output"].to_list()
    assert one != two
    row = res.results.row(0, named=True)
    assert row["seeds"] == 2 and row["n"] == 5


def test_cli_synthetic_end_to_end_and_compare(tiny_lm, tmp_path, capsys):
    _, _, folder = tiny_lm
    from kdlens.data.synthetic import make_task, write_task
    from kdlens.models import make_tiny_model

    task_dir = tmp_path / "task"
    write_task(task_dir, make_task(seed=2, n_train=10, n_test=6), vocab_size=300)
    rc = main(["evaluate", "--model", str(folder), "--tasks", "synthetic", "--data-dir", str(task_dir),
               "-o", str(tmp_path / "teacher"), "--max-new-tokens", "12", "--batch-size", "4",
               "--no-progress", "--name", "teacher"])
    out = capsys.readouterr().out
    assert rc == 0 and "| teacher | synthetic | Synthetic |" in out
    gens = pl.read_parquet(tmp_path / "teacher" / GENERATIONS)
    assert gens["gold"].to_list() == [r["answer"] for r in json.loads((task_dir / "test.json").read_text())]
    assert json.loads((tmp_path / "teacher" / "run.json").read_text())["decoding"]["max_new_tokens"] == 12

    # A different (student) model, evaluated with the same greedy settings.
    from kdlens.models import load_tokenizer

    tok = load_tokenizer(folder)
    student = make_tiny_model("tiny-s1", tok, seed=5)
    student.save_pretrained(tmp_path / "student_model")
    tok.save_pretrained(tmp_path / "student_model")
    assert main(["evaluate", "--model", str(tmp_path / "student_model"), "--tasks", "synthetic",
                 "--data", f"synthetic={task_dir / 'test.json'}", "-o", str(tmp_path / "student"),
                 "--max-new-tokens", "12", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "teacher"), str(tmp_path / "student"), "-o", str(tmp_path / "cmp")]) == 0
    assert "| teacher | student_model | synthetic | Synthetic | 6 |" in capsys.readouterr().out
    table = pl.read_parquet(tmp_path / "cmp" / "comparison.parquet")
    row = table.filter(pl.col("task") == "synthetic").row(0, named=True)
    t = pl.read_parquet(tmp_path / "teacher" / GENERATIONS).sort("id")
    s = pl.read_parquet(tmp_path / "student" / GENERATIONS).sort("id")
    assert row["agreement"] == pytest.approx(100 * np.mean([a is not None and b is not None and float(a) == float(b)
                                                            for a, b in zip(t["pred"], s["pred"])]))
    import sacrebleu

    expected = np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(s["output"], t["output"])])
    assert row["fidelity"] == pytest.approx(expected, abs=1e-9)
    assert row["corpus_bleu"] == pytest.approx(sacrebleu.corpus_bleu(list(s["output"]), [list(t["output"])]).score)
    assert "tok:13a" in row["bleu_signature"]
    assert table.filter(pl.col("task") == "Average")["n"][0] == 6


def test_compare_agreement_against_transcription(tmp_path):
    """Synthetic generation tables with known answers: agreement counts equal extracted answers only."""
    from kdlens.io import write_table_atomic

    def table(model, outputs):
        return pl.DataFrame({"model": model, "task": ["gsm8k"] * 4 + ["boolq"] * 2,
                             "id": ["0", "1", "2", "3", "0", "1"], "seed": [6] * 6, "output": outputs})

    write_table_atomic(table("T", ["The answer is 18.", "no idea", "1,000", "-3", "true", "false"]),
                       tmp_path / "t" / GENERATIONS)
    write_table_atomic(table("S", ["So 18.0", "no idea", "1000.0004", "3", "it is true", "none"]),
                       tmp_path / "s" / GENERATIONS)
    res = {r["task"]: r for r in compare(tmp_path / "t", tmp_path / "s").iter_rows(named=True)}
    assert res["gsm8k"]["agreement"] == 50.0  # 18 == 18.0 and 1000 ~ 1000.0004; no-answer pair does not agree
    assert res["boolq"]["agreement"] == 50.0
    assert res["gsm8k"]["n"] == 4


def test_cli_errors_and_task_list(capsys, tmp_path):
    assert main(["evaluate", "--tasks", "list"]) == 0
    listing = capsys.readouterr().out
    assert "| gsm8k | math | accuracy | 1319 | gsm8k |" in listing and "| dolly | instruct | rouge_l |" in listing
    assert main(["evaluate", "--model", "x", "--tasks", "gsm9k", "-o", str(tmp_path / "o")]) == 2
    assert "unknown task 'gsm9k'" in capsys.readouterr().err
    assert main(["evaluate", "--model", "x", "--tasks", "gsm8k", "-o", str(tmp_path / "o")]) == 2
    assert "--data gsm8k=FILE" in capsys.readouterr().err
    assert main(["evaluate", "--model", "x", "--tasks", "synthetic", "--seeds", "1,2", "-o", str(tmp_path / "o")]) == 2
    assert "several seeds" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "none1"), str(tmp_path / "none2")]) == 2
    assert "run `kdlens evaluate" in capsys.readouterr().err


def test_cli_paper_decoding_with_seeds(tiny_lm, tmp_path, capsys):
    _, _, folder = tiny_lm
    out = tmp_path / "paper"
    assert main(["evaluate", "--model", str(folder), "--tasks", "synthetic", "--paper-decoding",
                 "--seeds", "1,2", "--max-new-tokens", "6", "--task-option", "synthetic.n_test=3",
                 "--task-option", "synthetic.seed=4", "-o", str(out), "--no-progress"]) == 0
    decoding = json.loads((out / "run.json").read_text())["decoding"]
    assert decoding["do_sample"] is True and decoding["top_k"] == 0 and decoding["top_p"] == 1.0
    assert decoding["temperature"] == 1.0 and decoding["seeds"] == [1, 2]
    gens = pl.read_parquet(out / GENERATIONS)
    assert gens.height == 6
    from kdlens.data.synthetic import make_task

    assert sorted(set(gens["gold"])) == sorted({r["answer"] for r in make_task(seed=4, n_train=0, n_test=3).test})
