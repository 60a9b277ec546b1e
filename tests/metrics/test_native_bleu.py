"""kdlens._native's BLEU bootstrap and its missing-reference error, against sacreBLEU 2.6.

`resample_scores` scores every bootstrap resample in one native call. The references are sacreBLEU's
own statistics and its `BLEU.compute_bleu` on exact integer sums (a plain Python loop over the same
index matrix), and sacreBLEU's `_bootstrap_resample` itself (which sums in float32, hence rtol).
"""

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")
from sacrebleu.significance import _bootstrap_resample  # noqa: E402

from kdlens import _native, metrics  # noqa: E402
from kdlens.errors import KdlensError  # noqa: E402

WORDS = "the a cat dog sat on mat ran far 3 4 . , Über straße".split()


def _corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    hyps = [" ".join(rng.choice(WORDS, size=rng.integers(0, 14))) for _ in range(n)]
    refs = [" ".join(rng.choice(WORDS, size=rng.integers(1, 14))) for _ in range(n)]
    return hyps, refs


def _sacrebleu_stats(metric, hyps, refs) -> np.ndarray:
    return np.array(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


@pytest.mark.parametrize("smooth_method,smooth_value,eff",
                         [("exp", None, False), ("none", None, False), ("floor", 0.1, True),
                          ("add-k", 1, False), ("add-k", 2, True)])
def test_resample_scores_equal_sacrebleus_formula_on_exact_sums(smooth_method, smooth_value, eff):
    hyps, refs = _corpus(80, seed=3)
    metric = sacrebleu.BLEU(smooth_method=smooth_method, smooth_value=smooth_value, effective_order=eff)
    stats = _sacrebleu_stats(metric, hyps, refs)
    idxs = np.random.default_rng(12345).choice(len(stats), size=(300, len(stats)), replace=True)
    ours = _native.resample_scores(stats, idxs, 4, smooth_method,
                                   None if smooth_value is None else float(smooth_value), eff)
    expected = []
    for row in idxs:
        sums = [0] * stats.shape[1]
        for i in row:
            for c, v in enumerate(stats[i]):
                sums[c] += int(v)
        expected.append(sacrebleu.BLEU.compute_bleu(
            correct=sums[2:6], total=sums[6:10], sys_len=sums[0], ref_len=sums[1],
            smooth_method=smooth_method, smooth_value=smooth_value, effective_order=eff).score)
    assert ours.dtype == np.float64 and ours.shape == (300,)
    assert ours.tolist() == expected  # bit for bit


def test_resample_scores_match_sacrebleus_bootstrap_resample(monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    hyps, refs = _corpus(120, seed=5)
    metric = sacrebleu.BLEU()
    stats = _sacrebleu_stats(metric, hyps, refs)
    _, theirs = _bootstrap_resample(stats.tolist(), metric, 500)
    idxs = np.random.default_rng(12345).choice(len(stats), size=(500, len(stats)), replace=True)
    ours = _native.resample_scores(stats, idxs)
    np.testing.assert_allclose(ours, [s.score for s in theirs], rtol=1e-5, atol=0)


def test_resample_scores_read_any_numpy_layout_and_any_resample_size():
    hyps, refs = _corpus(50, seed=7)
    stats = _native.bleu_stats(hyps, [refs])
    idxs = np.random.default_rng(0).choice(len(stats), size=(40, 30), replace=True)  # 30 of 50
    c = _native.resample_scores(stats, idxs)
    f = _native.resample_scores(np.asfortranarray(stats), np.asfortranarray(idxs))
    assert c.tolist() == f.tolist()
    one_by_one = [_native.score_from_row(stats[row].sum(axis=0).tolist())[0] for row in idxs]
    assert c.tolist() == one_by_one


@pytest.mark.parametrize("idxs,message", [
    (np.array([[0, 3]]), r"resamples\[0, 1\] = 3 is not a row of stats \(0\.\.3\)"),
    (np.array([[0, 1], [2, -1]]), r"resamples\[1, 1\] = -1 is not a row of stats"),
    (np.zeros((4, 0), dtype=np.int64), "at least one segment"),
])
def test_resample_scores_reject_bad_index_matrices(idxs, message):
    stats = _native.bleu_stats(["a b", "c", "d e f"], [["a b", "c d", "d e"]])
    with pytest.raises(ValueError, match=message):
        _native.resample_scores(stats, idxs.astype(np.int64))


def test_resample_scores_check_the_statistics_width():
    stats = _native.bleu_stats(["a b"], [["a b"]], max_order=2)
    one = np.zeros((1, 1), dtype=np.int64)
    assert _native.resample_scores(stats, one, 2).tolist() == [_native.score_from_row(stats[0].tolist(), 2)[0]]
    with pytest.raises(ValueError, match=r"10 columns \(2 \+ 2 \* max_order\), got 6"):
        _native.resample_scores(stats, np.zeros((1, 1), dtype=np.int64))


# --- a segment with no reference (issue 12 item 3, issue 14 item 8) ------------------------------

NO_REFERENCE = [
    (["a b c"], [[None]]),                                   # the only stream is None
    (["a b c", "x y"], [["a b", None]]),                     # one row of one stream
    (["a b c", "x y"], [["x y", None], ["a", None]]),        # a row that every stream lacks
]


@pytest.mark.parametrize("hyps,refs", NO_REFERENCE)
def test_a_segment_without_references_is_an_error_as_in_sacrebleu(hyps, refs):
    with pytest.raises(TypeError):  # sacreBLEU 2.6 cannot score it either
        sacrebleu.corpus_bleu(hyps, refs)
    row = next(i for i in range(len(hyps)) if all(s[i] is None for s in refs))
    with pytest.raises(ValueError, match=f"segment {row} has no reference"):
        _native.bleu_stats(hyps, refs)
    with pytest.raises(KdlensError, match=f"segment {row} has no reference"):
        metrics.corpus_bleu(hyps, refs)
    with pytest.raises(KdlensError, match=f"segment {row} has no reference"):
        metrics.sentence_bleu(hyps, refs)


def test_a_null_in_an_arrow_reference_column_is_an_error():
    pa = pytest.importorskip("pyarrow")
    with pytest.raises(KdlensError, match="segment 1 has no reference"):
        metrics.corpus_bleu(["a b", "c d"], pa.array(["a b", None]))


def test_a_segment_missing_one_of_two_references_is_still_scored_as_sacrebleu_does():
    hyps, refs = ["a b c", "x y"], [["x y", None], ["a", "x y z"]]
    ours = metrics.corpus_bleu(hyps, refs)
    theirs = sacrebleu.BLEU().corpus_score(hyps, refs)
    assert abs(ours.score - theirs.score) <= 1e-9
    assert ours.ref_len == theirs.ref_len


def test_sentence_scores_read_a_fortran_ordered_matrix_by_rows():
    hyps, refs = _corpus(30, seed=11)
    stats = _native.bleu_stats(hyps, [refs])
    c = _native.scores_from_stats(stats)
    assert _native.scores_from_stats(np.asfortranarray(stats)).tolist() == c.tolist()
    assert c.tolist() == [_native.score_from_row(r.tolist(), effective_order=True)[0] for r in stats]


# --- counts/totals as sacreBLEU reports them (issue 14 item 10) ------------------------------------

@pytest.mark.parametrize("smooth_method,smooth_value,eff", [
    ("add-k", 1, False), ("add-k", 0.5, True), ("add-k", 3, False), ("exp", None, False), ("floor", 0.1, True)])
@pytest.mark.parametrize("seed,n", [(1, 40), (2, 1), (4, 3)])
def test_score_parts_report_counts_and_totals_as_sacrebleu(smooth_method, smooth_value, eff, seed, n):
    hyps, refs = _corpus(n, seed=seed)
    hyps[0] = "the"  # a short segment: with n == 1 no 2..4-grams, so add-k stops early
    metric = sacrebleu.BLEU(smooth_method=smooth_method, smooth_value=smooth_value, effective_order=eff)
    theirs = metric.corpus_score(hyps, [refs])
    row = _native.bleu_stats(hyps, [refs]).sum(axis=0).tolist()
    score, precisions, bp, counts, totals = _native.score_parts(
        row, 4, smooth_method, None if smooth_value is None else float(smooth_value), eff)
    assert (score, precisions, bp) == (theirs.score, theirs.precisions, theirs.bp)
    assert counts == theirs.counts and totals == theirs.totals
    assert _native.score_from_row(row, 4, smooth_method, None if smooth_value is None else float(smooth_value),
                                  eff) == (score, precisions, bp)
    if smooth_method == "add-k" and any(row[2:6]):
        assert counts[1:] != row[3:6] or totals[1:] != row[7:10]  # reported != raw under add-k


# --- n-gram orders 1..9 (issue 14 item 11) ---------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_piece = st.sampled_from(WORDS + ["the cat", "a a a", "3.5", "x-y", "“q”"])
_segment = st.lists(_piece, min_size=0, max_size=25).map(" ".join)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 9), st.lists(st.tuples(_segment, _segment, _segment), min_size=1, max_size=8),
       st.sampled_from([("exp", None, False), ("add-k", 1, False), ("floor", 0.1, True), ("none", None, True)]))
def test_every_order_1_to_9_equals_sacrebleu(order, rows, smoothing):
    method, value, eff = smoothing
    hyps = [h for h, _, _ in rows]
    streams = [[r for _, r, _ in rows], [r2 for _, _, r2 in rows]]
    metric = sacrebleu.BLEU(max_ngram_order=order, smooth_method=method, smooth_value=value, effective_order=eff)
    stats = _native.bleu_stats(hyps, streams, max_order=order)
    assert stats.shape == (len(rows), 2 + 2 * order)
    assert stats.tolist() == metric._extract_corpus_statistics(hyps, streams)
    theirs = metric.corpus_score(hyps, streams)
    score, precisions, bp, counts, totals = _native.score_parts(
        stats.sum(axis=0).tolist(), order, method, None if value is None else float(value), eff)
    assert (score, precisions, bp, counts, totals) == (theirs.score, theirs.precisions, theirs.bp,
                                                       theirs.counts, theirs.totals)


def test_orders_outside_1_to_9_are_refused():
    for order in (0, 10):
        with pytest.raises(ValueError, match=r"max_ngram_order must be 1\.\.=9"):
            _native.bleu_stats(["a"], [["a"]], max_order=order)
