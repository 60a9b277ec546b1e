"""Missing values in pandas columns (issue 14 item 9): pandas stores None as NaN (or pd.NA), also in
object and str columns; kdlens reads them as missing, as sacreBLEU reads None.
Run: ``python -m pytest tests/metrics/test_missing_values.py -q``."""

import math

import numpy as np
import pytest

from kdlens import metrics
from kdlens.errors import KdlensError
from kdlens.metrics.columns import text_column

pd = pytest.importorskip("pandas")
sacrebleu = pytest.importorskip("sacrebleu")

HYPS = ["the cat sat on the mat", "a dog ran in the park today", "x y z w", "we all went home early"]
REF1 = ["the cat sat on a mat", "a dog ran in a park", "x y z", "we went home early"]
REF2 = ["a cat sat on the mat", None, "x y w z", None]


@pytest.mark.parametrize("make", [
    lambda v: pd.Series(v, dtype=object),
    lambda v: pd.Series([np.nan if x is None else x for x in v], dtype=object),
    lambda v: pd.Series(v),  # pandas' default string dtype: None becomes NaN
    lambda v: pd.Series(v, dtype="string"),  # pd.NA
    lambda v: pd.DataFrame({"r": v})["r"],
])
def test_a_missing_reference_in_a_pandas_column_scores_as_sacrebleu(make):
    col = make(REF2)
    assert text_column(col) == REF2
    want = sacrebleu.corpus_bleu(HYPS, [REF1, REF2])
    got = metrics.corpus_bleu(HYPS, [pd.Series(REF1), col])
    assert math.isclose(got.score, want.score, rel_tol=0, abs_tol=1e-12)
    assert (got.sys_len, got.ref_len) == (want.sys_len, want.ref_len)
    assert got.signature.startswith("nrefs:var|")
    per_item = metrics.sentence_bleu(HYPS, [pd.Series(REF1), col])
    for i, hyp in enumerate(HYPS):
        want_s = sacrebleu.sentence_bleu(hyp, [r for r in (REF1[i], REF2[i]) if r is not None]).score
        assert math.isclose(per_item[i], want_s, abs_tol=1e-12)


def test_a_missing_hypothesis_in_pandas_is_a_clear_error():
    hyps = pd.Series(["the cat", None, "x y", "we"])
    with pytest.raises(KdlensError, match=r"\[1\] is null"):
        metrics.corpus_bleu(hyps, [REF1])
