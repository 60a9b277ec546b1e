"""``kdlens fidelity``: joins, batches, outputs, and the errors bad input gets.

Per-pair BLEU and agreement are checked against sacrebleu and the plain-Python answer reference
(tests/metrics/test_answers.py) on a shuffled, multi-batch input; the bounded-memory paths (many
hash partitions on disk) are checked on tiny inputs with tiny partitions: the reordered path gives
exactly the aligned path's outputs, and every key error is still found and named.
"""

import numpy as np
import pytest

pl = pytest.importorskip("polars")
sacrebleu = pytest.importorskip("sacrebleu")

from kdlens.cli import main  # noqa: E402
from kdlens.demo import make_pairs  # noqa: E402

from test_answers import ref_agree  # noqa: E402


def _write(frame, path):
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_ndjson(path)
    return path


def _frames(n=700, seed=3):
    c = make_pairs(n, seed)
    t = pl.DataFrame({"task": c["task"], "id": c["id"], "output": c["teacher_output"], "gold": c["gold"]})
    s = pl.DataFrame({"task": c["task"], "id": c["id"], "output": c["student_output"]})
    return t, s, c


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
@pytest.mark.parametrize("shuffled", [False, True])
def test_scores_match_references(tmp_path, suffix, shuffled, capsys):
    t, s, c = _frames()
    if shuffled:
        s = s.sample(fraction=1.0, shuffle=True, seed=1)
    tp, sp = _write(t, tmp_path / f"t{suffix}"), _write(s, tmp_path / f"s{suffix}")
    out = tmp_path / "out"
    assert main(["fidelity", str(tp), str(sp), "-o", str(out), "--batch-rows", "128", "--no-progress"]) == 0
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert len(pairs) == 700
    truth = pl.DataFrame({"task": c["task"], "id": [str(i) for i in c["id"]],
                          "t": c["teacher_output"], "s": c["student_output"], "gold": c["gold"]})
    joined = pairs.join(truth, on=["task", "id"], how="inner")
    assert len(joined) == 700
    metric = sacrebleu.BLEU(effective_order=True)
    expected = [metric.sentence_score(h, [r]).score for h, r in zip(joined["s"], joined["t"])]
    np.testing.assert_allclose(joined["bleu"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert joined["agree"].to_list() == [ref_agree(a, b, "gsm8k") for a, b in zip(joined["t"], joined["s"])]
    summary = pl.read_parquet(out / "summary.parquet")
    overall = summary.filter(pl.col("task") == "ALL").row(0, named=True)
    assert abs(overall["corpus_bleu"] - sacrebleu.corpus_bleu(list(joined["s"]), [list(joined["t"])]).score) <= 1e-9
    assert overall["agreement"] == pytest.approx(100 * np.mean(joined["agree"].to_numpy()))
    assert "| ALL |" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_demo_runs(tmp_path, capsys):
    assert main(["fidelity", "--demo", "--demo-pairs", "300", "-o", str(tmp_path / "d"), "--no-progress"]) == 0
    md = (tmp_path / "d" / "summary.md").read_text()
    assert "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0" in md
    assert len(pl.read_parquet(tmp_path / "d" / "pairs.parquet")) == 300


def _run_err(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    t, s, _ = _frames(50)
    tp = _write(t, tmp_path / "t.parquet")
    out = str(tmp_path / "o")
    cases = [
        (s.drop("output"), "lacks column\\(s\\) output"),
        (pl.concat([s, s.head(2)]), "share a \\(task, id\\) key"),
        (s.head(40), "teacher key\\(s\\) have no student row"),
        (s.with_columns(pl.when(pl.col("id") == 7).then(None).otherwise(pl.col("output")).alias("output")),
         "output is null"),
        (s.with_columns(pl.col("id").alias("output")), "must hold strings"),
    ]
    for frame, msg in cases:
        sp = _write(frame, tmp_path / "s.parquet")
        code, err = _run_err(["fidelity", str(tp), str(sp), "-o", out, "--no-progress"], capsys)
        assert code == 2, err
        assert pytest.importorskip("re").search(msg, err), err
        assert not (tmp_path / "o" / "pairs.parquet").exists()
    code, err = _run_err(["fidelity", str(tp), str(tmp_path / "missing.jsonl"), "-o", out], capsys)
    assert code == 2 and "no such file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "gsm8k", "id": 1, "output": "x"}\n{not json\n')
    code, err = _run_err(["fidelity", str(bad), str(bad), "-o", out, "--no-progress"], capsys)
    assert code == 2 and "bad.jsonl" in err


# ------------------------------------------------------------------------------------------------
# the bounded-memory paths: many small hash partitions on tiny inputs


@pytest.fixture
def small_partitions(monkeypatch):
    from kdlens.metrics import stream as fidelity

    monkeypatch.setattr(fidelity, "KEY_PARTITION_ROWS", 37)  # 900 keys -> 25 key partitions
    monkeypatch.setattr(fidelity, "PARTITION_BYTES", 30_000)  # texts -> dozens of partitions
    return fidelity


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_reordered_path_equals_aligned_and_sacrebleu(tmp_path, suffix, small_partitions):
    t, s, c = _frames(900, seed=5)
    tp = _write(t, tmp_path / f"t{suffix}")
    sp = _write(s, tmp_path / f"s{suffix}")
    shuffled = _write(s.sample(fraction=1.0, shuffle=True, seed=2), tmp_path / f"s2{suffix}")
    a = small_partitions.score_files(tp, sp, tmp_path / "a", batch_rows=100, progress=False)
    b = small_partitions.score_files(tp, shuffled, tmp_path / "b", batch_rows=100, progress=False)
    assert a["aligned"] and not b["aligned"]
    pa_, pb = pl.read_parquet(a["paths"]["pairs"]), pl.read_parquet(b["paths"]["pairs"])
    assert pb["id"].to_list() == [str(i) for i in c["id"]]  # teacher row order
    assert pa_.equals(pb)
    assert a["summary"].equals(b["summary"])
    metric = sacrebleu.BLEU(effective_order=True)
    expected = [metric.sentence_score(h, [r]).score for h, r in zip(c["student_output"], c["teacher_output"])]
    np.testing.assert_allclose(pb["bleu"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert pb["agree"].to_list() == [ref_agree(x, y, "gsm8k")
                                     for x, y in zip(c["teacher_output"], c["student_output"])]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "pairs.parquet", "summary.csv", "summary.md", "summary.parquet"]


def test_key_errors_across_partitions(tmp_path, capsys, small_partitions):
    t, s, _ = _frames(300)
    tp = _write(t, tmp_path / "t.parquet")
    out = tmp_path / "o"

    def err_for(frame):
        sp = _write(frame, tmp_path / "s.parquet")
        code, err = _run_err(["fidelity", str(tp), str(sp), "-o", str(out), "--no-progress"], capsys)
        assert code == 2, err
        assert not out.exists()  # a failed run leaves no output folder behind
        return err

    first = s.row(0, named=True)
    err = err_for(pl.concat([s, s.head(2), s.slice(7, 1)]))
    assert "student file" in err and "6 rows share a (task, id) key" in err
    assert f"({first['task']}, {first['id']}) at row 0" in err
    extra = s.head(3).with_columns(pl.col("id") + 10_000)
    err = err_for(pl.concat([s.head(240), extra]))
    assert "60 teacher key(s) have no student row" in err
    assert "3 student key(s) have no teacher row" in err and "10000)" in err
    row = pl.int_range(pl.len())
    nulls = s.with_columns(pl.when(row.is_in([5, 170])).then(None).otherwise(pl.col("id")).alias("id"))
    assert "null task or id at row(s) [5, 170]" in err_for(nulls)
    shuffled = s.sample(fraction=1.0, shuffle=True, seed=4)
    bad = shuffled.with_columns(pl.when(pl.col("id") == 11).then(None).otherwise(pl.col("output")).alias("output"))
    err = err_for(bad)  # found while scoring a partition of the reorder pass
    assert "output is null" in err and "'11'" in err
    gold_null = t.with_columns(pl.when(pl.col("id") == 3).then(None).otherwise(pl.col("gold")).alias("gold"))
    _write(gold_null, tp)
    err = err_for(shuffled)
    assert "gold answer is null" in err


def test_reorder_partitions_split_again_when_the_size_estimate_is_low(tmp_path, small_partitions, monkeypatch):
    # e.g. dictionary-encoded Parquet text: the estimate says one partition, the rows need dozens
    monkeypatch.setattr(small_partitions, "_text_bytes", lambda path: 0)
    t, s, c = _frames(600, seed=9)
    tp, sp = _write(t, tmp_path / "t.parquet"), _write(s, tmp_path / "s.parquet")
    shuffled = _write(s.sample(fraction=1.0, shuffle=True, seed=3), tmp_path / "s2.parquet")
    a = small_partitions.score_files(tp, sp, tmp_path / "a", batch_rows=64, progress=False)
    b = small_partitions.score_files(tp, shuffled, tmp_path / "b", batch_rows=64, progress=False)
    assert a["aligned"] and not b["aligned"]
    assert pl.read_parquet(a["paths"]["pairs"]).equals(pl.read_parquet(b["paths"]["pairs"]))
    assert a["summary"].equals(b["summary"])
