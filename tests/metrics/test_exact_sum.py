"""kdlens.metrics.pairs.exact_sum is the exact sum of float64 values (checked against Python's
Fraction arithmetic and math.fsum), so per-task totals do not depend on how the pairs were batched:
the ray backend's summary, summed over shards, is the CLI's to the last bit."""

import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kdlens.metrics.pairs import STAT_NAMES, PairTotals, accumulate, exact_sum, summary


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(0, 300), elements=st.floats(-1e300, 1e300)))
def test_exact_sum_is_the_exact_rational_sum(values):
    want = sum((Fraction(float(v)) for v in values), Fraction(0))
    assert exact_sum(values) == want
    assert float(exact_sum(values)) == math.fsum(values)


def test_exact_sum_of_sentence_bleu_like_values_and_edge_cases():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(50_000) * 100, [0.0, 5e-324, 1e-310, 100.0]])
    assert exact_sum(values) == sum((Fraction(float(v)) for v in values), Fraction(0))
    try:
        exact_sum(np.array([1.0, np.nan]))
    except ValueError:
        pass
    else:
        raise AssertionError("a NaN must be refused")


def _pairs(bleu: np.ndarray, tasks: list[str]):
    n = len(bleu)
    cols = {"task": pa.array(tasks, pa.large_string()), "bleu": pa.array(bleu)}
    cols.update({f"bleu_{k}": pa.array(np.full(n, 3, dtype=np.int32)) for k in STAT_NAMES})
    cols["agree"] = pa.array(np.arange(n) % 2 == 0)
    return pa.table(cols)


def test_totals_do_not_depend_on_batching_or_order():
    rng = np.random.default_rng(1)
    bleu = rng.random(10_000) * 100
    tasks = ["a" if x < 0.3 else "b" for x in rng.random(10_000)]
    table = _pairs(bleu, tasks)
    one: dict[str, PairTotals] = {}
    accumulate(table, one, with_gold=False)
    order = rng.permutation(10_000)
    shuffled = table.take(pa.array(order))
    parts = []
    for lo in range(0, 10_000, 777):  # other batches, in reverse, merged like shards
        t: dict[str, PairTotals] = {}
        accumulate(shuffled.slice(lo, 777), t, with_gold=False)
        parts.append(t)
    merged: dict[str, PairTotals] = {}
    for t in reversed(parts):
        for task, tt in t.items():
            merged.setdefault(task, PairTotals()).add(tt)
    assert summary(one, False).equals(summary(merged, False))
    a = np.array(tasks) == "a"
    exact_mean = sum((Fraction(float(v)) for v in bleu[a]), Fraction(0)) / int(a.sum())
    assert summary(one, False).filter(task="a")["mean_sentence_bleu"][0] == float(exact_mean)
