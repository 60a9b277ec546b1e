"""max_ngram_order 1..9 (issue 14 item 11) and counts/totals under add-k (item 10), through the
Python API, against sacreBLEU 2.6's BLEU class. Run:
``python -m pytest tests/metrics/test_bleu_orders_and_addk.py -q``."""

import math

import pytest

from kdlens import metrics
from kdlens.errors import KdlensError
from kdlens.metrics.bleu import bleu_statistics

sacrebleu = pytest.importorskip("sacrebleu")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from sacrebleu.metrics import BLEU  # noqa: E402

words = st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "dog", ".", ",", "ran", "1,000", "x"])
segs = st.lists(words, max_size=14).map(" ".join)
SMOOTH = st.sampled_from([("exp", None), ("none", None), ("floor", None), ("floor", 0.3), ("add-k", None),
                          ("add-k", 2), ("add-k", 0.5)])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(segs, segs, segs), min_size=1, max_size=8), st.integers(1, 9), SMOOTH, st.booleans())
def test_any_order_and_smoothing_matches_sacrebleu(rows, order, smooth, eff):
    method, value = smooth
    hyps = [h for h, _, _ in rows]
    refs = [[r for _, r, _ in rows], [r for _, _, r in rows]]
    bleu = BLEU(max_ngram_order=order, smooth_method=method, smooth_value=value, effective_order=eff)
    want = bleu.corpus_score(hyps, refs)
    got = metrics.corpus_bleu(hyps, refs, max_ngram_order=order, smooth_method=method, smooth_value=value,
                              use_effective_order=eff)
    assert math.isclose(got.score, want.score, abs_tol=1e-9)
    assert got.counts == want.counts and got.totals == want.totals  # k added under add-k, as sacreBLEU
    assert [type(x) for x in got.counts] == [type(x) for x in want.counts]
    assert got.precisions == pytest.approx(want.precisions, abs=1e-9)
    # the raw statistics stay available
    stats = bleu_statistics(hyps, refs, max_ngram_order=order).stats.sum(axis=0)
    assert got.raw_counts == stats[2:2 + order].tolist() and got.raw_totals == stats[2 + order:].tolist()
    sent_bleu = BLEU(max_ngram_order=order, smooth_method=method, smooth_value=value, effective_order=True)
    per_item = metrics.sentence_bleu(hyps, refs, max_ngram_order=order, smooth_method=method, smooth_value=value)
    for i, h in enumerate(hyps):
        assert math.isclose(per_item[i], sent_bleu.sentence_score(h, [refs[0][i], refs[1][i]]).score, abs_tol=1e-9)


def test_issue_add_k_example():
    hyps, refs = ["the cat sat on the mat"], [["the cat sat on a mat"]]
    want = sacrebleu.corpus_bleu(hyps, refs, smooth_method="add-k")
    got = metrics.corpus_bleu(hyps, refs, smooth_method="add-k")
    assert got.counts == want.counts == [5, 4, 3, 2] and got.totals == want.totals == [6, 6, 5, 4]
    assert got.raw_counts == [5, 3, 2, 1] and got.raw_totals == [6, 5, 4, 3]


@pytest.mark.parametrize("order", [0, 10, -1])
def test_orders_outside_1_to_9_are_clear_errors(order):
    with pytest.raises(KdlensError, match="max_ngram_order must be between 1 and 9"):
        metrics.corpus_bleu(["a"], ["a"], max_ngram_order=order)
