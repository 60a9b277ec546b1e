"""BLEUStatistics.bootstrap_ci (one native call over the resample-index matrix) against sacreBLEU's own
bootstrap (corpus_score(n_bootstrap=...), seed 12345): the same resamples, so the same mean and half-width
up to sacreBLEU's float32 sums.
Run: python -m pytest tests/metrics/test_bleu_bootstrap.py -q
"""

import random

import pytest
from sacrebleu.metrics import BLEU

from kdlens.metrics import bleu_statistics

WORDS = "the a cat dog sat on mat runs quickly blue red , . 3 14".split()


@pytest.mark.parametrize("seed,n", [(0, 300), (1, 57)])
def test_bootstrap_ci_equals_sacrebleu(seed, n):
    rnd = random.Random(seed)
    hyps = [" ".join(rnd.choices(WORDS, k=rnd.randint(2, 14))) for _ in range(n)]
    refs = [" ".join(rnd.choices(WORDS, k=rnd.randint(2, 14))) for _ in range(n)]
    theirs = BLEU().corpus_score(hyps, [refs], n_bootstrap=500)
    mean, half = bleu_statistics(hyps, [refs]).bootstrap_ci(500, seed=12345)
    assert mean == pytest.approx(theirs._mean, rel=1e-6, abs=1e-9)
    assert half == pytest.approx(theirs._ci, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_n_bootstrap_must_be_a_positive_integer(bad):
    from kdlens.errors import KdlensError

    with pytest.raises(KdlensError, match="n_bootstrap must be an integer >= 1"):
        bleu_statistics(["a b c"], [["a b d"]]).bootstrap_ci(bad)


@pytest.mark.parametrize("bad", [-1, 0, 1.5, "2"])
def test_num_threads_must_be_none_or_positive(bad):
    from kdlens.errors import KdlensError
    from kdlens.metrics import agreement, sentence_bleu

    with pytest.raises(KdlensError, match="num_threads must be None"):
        sentence_bleu(["a b c"], [["a b d"]], num_threads=bad)
    with pytest.raises(KdlensError, match="num_threads must be None"):
        agreement(["5"], ["5"], "gsm8k", num_threads=bad)
