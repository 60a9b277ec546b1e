"""kdlens BLEU against sacrebleu 2.6: its own published test cases, and the live library.

The published cases (inputs and expected values) are copied from sacrebleu's test suite,
test/test_bleu.py and test/test_sentence_bleu.py (github.com/mjpost/sacrebleu, Apache-2.0).
Each is checked against the published value (with sacrebleu's own epsilon) and against sacrebleu
itself at |diff| <= 1e-9 on the 0-100 scale.
"""

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")

from kdlens import metrics  # noqa: E402

TOL = 1e-9

# --- sacrebleu test/test_bleu.py ---------------------------------------------------------------
_refs = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]
_hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]

CORPUS_CASES = [
    (_hyps, _refs, {}, 48.530827),
    (["", "", ""], _refs, {}, 0.0),
    (_hyps, _refs, {"tokenize": "none"}, 49.1919566),
    (_hyps, _refs, {"tokenize": "13a"}, 48.530827),
    (_hyps, _refs, {"tokenize": "intl"}, 43.91623493),
    (_hyps, _refs, {"smooth_method": "none"}, 48.530827),
]

RAW_CASES = [  # raw_corpus_bleu(hyps, [refs], .01): tokenize none, floor smoothing, effective order
    # The suite's first case expects 0.003799178428257963, from before sacrebleu's early stop for
    # zero matches (its issue #141); sacrebleu 2.6 itself returns 0.0 there, and so does kdlens.
    (["this is a test", "another test"], ["ref1", "ref2"], 0.0),
    (["this is a test"], ["this is a test"], 1.0),
    (["this is a fest"], ["this is a test"], 0.223606797749979),
]
EFFECTIVE_ORDER_CASES = [
    (["test"], ["a test"], 0.3678794411714425),
    (["a test"], ["a test"], 1.0),
    (["a little test"], ["a test"], 0.03218297948685433),
]
DEGENERATE = [  # (correct, total, sys_len, ref_len), floor value, expected score
    (([0, 0, 0, 0], [4, 4, 2, 1], 0, 1), 0.0, 0.0),
    (([0, 0, 0, 0], [10, 11, 12, 0], 14, 10), 0.0, 0.0),
    (([0, 0, 0, 0], [0, 0, 0, 0], 0, 0), 0.0, 0.0),
    (([6, 5, 4, 0], [6, 5, 4, 3], 6, 6), 0.0, 0.0),
    (([0, 0, 0, 0], [0, 0, 0, 0], 0, 0), 0.1, 0.0),
    (([0, 0, 0, 0], [0, 0, 0, 0], 1, 5), 0.01, 0.0),
]

# --- sacrebleu test/test_sentence_bleu.py (example from its issue #98 and #141) -----------------
REF = "producţia de zahăr brut se exprimă în zahăr alb;"
SYS = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"
SENTENCE_CASES = [
    ("exp", None, False, "13a", 8.493),
    ("none", None, False, "13a", 0.0),
    ("floor", None, False, "13a", 4.51688),
    ("floor", 0.1, False, "13a", 4.51688),
    ("floor", 0.5, False, "13a", 10.10),
    ("add-k", None, False, "13a", 14.882),
    ("add-k", 1, False, "13a", 14.882),
    ("add-k", 2, False, "13a", 21.389),
    ("exp", None, False, "none", 7.347),
    ("exp", None, False, "intl", 8.493),
    ("exp", None, False, "char", 40.8759),
    ("exp", None, True, "char", 42.0267),
]
ZERO_CASES = ["exp", "none", "floor", "add-k"]


def raw_corpus(hyps, refs, floor):
    return metrics.corpus_bleu(hyps, refs, tokenize="none", smooth_method="floor",
                               smooth_value=floor, use_effective_order=True)


@pytest.mark.parametrize("hyps, refs, kwargs, expected", CORPUS_CASES)
def test_published_corpus_cases(hyps, refs, kwargs, expected):
    ours = metrics.corpus_bleu(hyps, refs, **kwargs)
    assert abs(ours.score - expected) < 1e-8
    theirs = sacrebleu.corpus_bleu(hyps, refs, **kwargs)
    assert abs(ours.score - theirs.score) <= TOL
    assert ours.counts == theirs.counts and ours.totals == theirs.totals
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert abs(ours.bp - theirs.bp) <= 1e-15


@pytest.mark.parametrize("hyps, refs, expected", RAW_CASES + EFFECTIVE_ORDER_CASES)
def test_published_raw_and_effective_order_cases(hyps, refs, expected):
    assert abs(raw_corpus(hyps, [refs], 0.01).score / 100 - expected) < 1e-8
    theirs = sacrebleu.raw_corpus_bleu(hyps, [refs], 0.01)
    assert abs(raw_corpus(hyps, [refs], 0.01).score - theirs.score) <= TOL


def test_published_statistics_and_offset():
    # sacrebleu's suite passes the bare strings; its expected statistics are those of the one
    # segment (hyp, ref), which is how kdlens (and sacrebleu 2.6 with lists) is called here.
    hyp, ref = "am I am a character sequence", "I am a symbol string sequence a a"
    ours = raw_corpus([hyp], [[ref]], 0.01)
    theirs = sacrebleu.raw_corpus_bleu([hyp], [[ref]], 0.01)
    assert ours.counts == theirs.counts == [4, 2, 1, 0]
    assert ours.totals == theirs.totals == [6, 5, 4, 3]
    assert abs(ours.score - theirs.score) <= TOL
    assert raw_corpus([hyp], [[ref]], 0.0).score == 0.0
    with_default = raw_corpus([hyp], [[ref]], None).score
    assert abs(with_default / 100 - 0.1555722182) < 1e-8
    assert abs(with_default - sacrebleu.raw_corpus_bleu([hyp], [[ref]]).score) <= TOL


def _stats_from(correct, total, sys_len, ref_len):
    row = np.array([[sys_len, ref_len, *correct, *total]], dtype=np.int64)
    return metrics.BLEUStatistics(row, nrefs=1, tokenize="13a", lowercase=False, max_ngram_order=4)


def test_published_scoring_case():
    st = _stats_from([9, 7, 5, 3], [10, 8, 6, 4], 11, 11)
    assert abs(st.corpus_score(smooth_method="none").score / 100 - 0.8375922397) < 1e-8
    theirs = sacrebleu.BLEU.compute_bleu([9, 7, 5, 3], [10, 8, 6, 4], 11, 11)
    assert abs(st.corpus_score(smooth_method="none").score - theirs.score) <= TOL


@pytest.mark.parametrize("stats, floor, expected", DEGENERATE)
def test_published_degenerate_statistics(stats, floor, expected):
    assert _stats_from(*stats).corpus_score(smooth_method="floor", smooth_value=floor).score == expected


@pytest.mark.parametrize("smooth, value, lowercase, tok, expected", SENTENCE_CASES)
def test_published_sentence_cases(smooth, value, lowercase, tok, expected):
    ours = metrics.sentence_bleu([SYS], [REF], smooth_method=smooth, smooth_value=value,
                                 lowercase=lowercase, tokenize=tok)[0]
    assert abs(ours - expected) < 1e-3
    theirs = sacrebleu.BLEU(lowercase=lowercase, tokenize=tok, smooth_method=smooth,
                            smooth_value=value, effective_order=True).sentence_score(SYS, [REF])
    assert abs(ours - theirs.score) <= TOL


@pytest.mark.parametrize("smooth", ZERO_CASES)
def test_published_zero_bleu(smooth):
    assert metrics.sentence_bleu(["this is a cat"], ["okay thanks"], smooth_method=smooth)[0] == 0.0


@pytest.mark.parametrize("tok", ["13a", "intl", "char", "none"])
@pytest.mark.parametrize("smooth, value", [("exp", None), ("floor", None), ("floor", 0.25),
                                           ("add-k", None), ("add-k", 3), ("none", None)])
@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("eff", [False, True])
def test_signature_matches_sacrebleu(tok, smooth, value, lowercase, eff):
    ours = metrics.corpus_bleu(_hyps, _refs, tokenize=tok, smooth_method=smooth, smooth_value=value,
                               lowercase=lowercase, use_effective_order=eff)
    metric = sacrebleu.BLEU(tokenize=tok, smooth_method=smooth, smooth_value=value,
                            lowercase=lowercase, effective_order=eff)
    theirs = metric.corpus_score(_hyps, _refs)
    assert ours.signature == metric.get_signature().format()
    assert abs(ours.score - theirs.score) <= TOL
    assert ours.format() == theirs.format(signature=metric.get_signature().format())


def test_variable_number_of_references():
    refs = [["a b c d", None, "the cat"], [None, "x y", "the cat sat"]]
    hyps = ["a b c", "x y z", "the cat sat"]
    ours = metrics.corpus_bleu(hyps, refs)
    metric = sacrebleu.BLEU()
    theirs = metric.corpus_score(hyps, refs)
    assert abs(ours.score - theirs.score) <= TOL
    assert ours.signature == metric.get_signature().format()  # nrefs:var


def test_bootstrap_matches_sacrebleu():
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat ran far 3 4 . ,".split()
    hyps = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(60)]
    refs = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(60)]
    ours = metrics.corpus_bleu(hyps, refs, n_bootstrap=200)
    metric = sacrebleu.BLEU()
    theirs = metric.corpus_score(hyps, [refs], n_bootstrap=200)
    assert abs(ours.score - theirs.score) <= TOL
    assert abs(ours.ci[0] - theirs._mean) <= 1e-6 and abs(ours.ci[1] - theirs._ci) <= 1e-6
    assert ours.signature == metric.get_signature().format()


def test_subset_score_equals_scoring_the_subset():
    hyps = ["a b c d", "x y", "the cat sat on", "q"]
    refs = ["a b c", "x y z", "the cat sat on the mat", "q r"]
    st = metrics.bleu_statistics(hyps, refs)
    mask = np.array([True, False, True, False])
    sub = st.subset(mask).corpus_score()
    direct = sacrebleu.corpus_bleu([h for h, m in zip(hyps, mask) if m],
                                   [[r for r, m in zip(refs, mask) if m]])
    assert abs(sub.score - direct.score) <= TOL
