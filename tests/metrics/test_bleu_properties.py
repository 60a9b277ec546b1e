"""Property tests: kdlens BLEU equals sacrebleu 2.6 on thousands of random segments.

Random texts mix words, digits, punctuation and symbols sacrebleu's tokenizers treat specially
(13a's regexes, intl's Unicode classes), arbitrary Unicode, whitespace of every kind, empty and
whitespace-only strings; options are drawn over every tokenizer, smoothing and case setting.
"""

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from kdlens import _native, metrics  # noqa: E402

TOL = 1e-9

TRICKY = ["&amp;", "&quot;", "&lt;", "&gt;", "<skipped>", "-\n", "\n", "1,000", "3.5", "-2", "5-3",
          "a.", ".b", ",", ".", "'s", "$", "%", "(", ")", "Σ", "ΣΑΣ", "İ", "ß", "\u3000", "\x1c", "\xa0",
          "\u2028", "٣", "½", "—", "…", "€", "😀", "é", "e\u0301", "\t", " ", "  ", "x-", "-y"]
WORDS = ["the", "The", "cat", "sat", "on", "mat", "We", "have", "12", "apples", "so", "answer",
         "is", "18", "total", "=", "+", "*", "/", "step", "1:"]

piece = st.one_of(st.sampled_from(TRICKY), st.sampled_from(WORDS), st.text(max_size=6))
texts = st.lists(piece, max_size=40).map(lambda parts: "".join(
    p + (" " if i % 3 else "") for i, p in enumerate(parts)))
options = st.fixed_dictionaries({
    "tokenize": st.sampled_from(["13a", "intl", "char", "none"]),
    "lowercase": st.booleans(),
    "smooth": st.sampled_from([("exp", None), ("floor", None), ("floor", 0.3), ("add-k", None),
                               ("add-k", 2), ("none", None)]),
})


def _sacre(tok, lowercase, smooth, eff):
    return sacrebleu.BLEU(tokenize=tok, lowercase=lowercase, smooth_method=smooth[0],
                          smooth_value=smooth[1], effective_order=eff)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=25), options)
def test_sentence_and_corpus_bleu_equal_sacrebleu(pairs, opts):
    hyps = [h for h, _ in pairs]
    refs = [r for _, r in pairs]
    tok, lc, sm = opts["tokenize"], opts["lowercase"], opts["smooth"]
    ours = metrics.sentence_bleu(hyps, refs, tokenize=tok, lowercase=lc, smooth_method=sm[0],
                                 smooth_value=sm[1])
    metric = _sacre(tok, lc, sm, True)
    theirs = np.array([metric.sentence_score(h, [r]).score for h, r in pairs])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
    ours_c = metrics.corpus_bleu(hyps, refs, tokenize=tok, lowercase=lc, smooth_method=sm[0],
                                 smooth_value=sm[1])
    metric_c = _sacre(tok, lc, sm, False)
    theirs_c = metric_c.corpus_score(hyps, [refs])
    assert abs(ours_c.score - theirs_c.score) <= TOL
    assert ours_c.counts == list(theirs_c.counts)[:4] or sm[0] == "add-k"
    assert (ours_c.sys_len, ours_c.ref_len) == (theirs_c.sys_len, theirs_c.ref_len)
    assert ours_c.signature == metric_c.get_signature().format()


@settings(max_examples=150, deadline=None)
@given(texts, st.sampled_from(["13a", "intl", "char", "none"]), st.booleans())
def test_tokenizers_equal_sacrebleu(text, tok, lowercase):
    metric = sacrebleu.BLEU(tokenize=tok, lowercase=lowercase)
    expected = " ".join(metric._preprocess_segment(text).split())
    assert _native.tokenize(text, tok, lowercase) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, texts, st.one_of(st.none(), texts)), min_size=1, max_size=15))
def test_multiple_references_equal_sacrebleu(rows):
    hyps = [h for h, _, _ in rows]
    streams = [[r for _, r, _ in rows], [r2 for _, _, r2 in rows]]
    ours = metrics.sentence_bleu(hyps, streams)
    metric = sacrebleu.BLEU(effective_order=True)
    theirs = [metric.sentence_score(h, [r for r in (r1, r2) if r is not None]).score
              for h, r1, r2 in rows]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
    ours_c = metrics.corpus_bleu(hyps, streams)
    metric_c = sacrebleu.BLEU()
    theirs_c = metric_c.corpus_score(hyps, streams)
    assert abs(ours_c.score - theirs_c.score) <= TOL
    assert ours_c.signature == metric_c.get_signature().format()


def test_edge_segments_equal_sacrebleu():
    cases = [("", ""), ("", "a"), ("a", ""), ("   ", "\t\n"), (" . ", "."), ("a b c d e", "a b c d e"),
             ("1,234.5-6", "1,234.5 - 6"), ("ΣΑΣ σ", "σας"), ("x" * 5000, "x" * 4999)]
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(300)] + list(",.;:!?()$%-")
    long_h = " ".join(rng.choice(vocab, size=40_000))
    long_r = " ".join(rng.choice(vocab, size=38_000))
    cases.append((long_h, long_r))
    many_types = " ".join(f"t{i}" for i in range(70_000))  # > 65535 distinct tokens: wide keys
    cases.append((many_types, many_types[: len(many_types) // 2]))
    hyps, refs = zip(*cases)
    for tok in ("13a", "intl", "char"):
        ours = metrics.sentence_bleu(list(hyps), list(refs), tokenize=tok)
        metric = sacrebleu.BLEU(tokenize=tok, effective_order=True)
        theirs = [metric.sentence_score(h, [r]).score for h, r in cases]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


def test_results_identical_whatever_the_thread_count():
    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(50)] + list(",.;:!?") + ["12", "3.5"]
    hyps = [" ".join(rng.choice(vocab, size=rng.integers(0, 60))) for _ in range(3000)]
    refs = [" ".join(rng.choice(vocab, size=rng.integers(0, 60))) for _ in range(3000)]
    one = metrics.sentence_bleu(hyps, refs, num_threads=1)
    two = metrics.sentence_bleu(hyps, refs, num_threads=2)
    four = metrics.sentence_bleu(hyps, refs, num_threads=4)
    assert one.tobytes() == two.tobytes() == four.tobytes()
    s1 = metrics.bleu_statistics(hyps, refs, num_threads=1).stats
    s2 = metrics.bleu_statistics(hyps, refs, num_threads=2).stats
    assert np.array_equal(s1, s2)


def test_every_input_kind_gives_the_same_scores():
    pa = pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    hyps = ["the cat sat", "Σ ας.", "", "a b c d"] * 5
    refs = ["the cat sat down", "σας .", "x", "a b c"] * 5
    expected = metrics.sentence_bleu(hyps, refs)
    inputs = [
        (np.array(hyps), np.array(refs)),
        (np.array(hyps, dtype=object), np.array(refs, dtype=object)),
        (pa.array(hyps), pa.array(refs, type=pa.large_string())),
        (pa.chunked_array([hyps[:7], hyps[7:]]), pa.array(["pad"] + refs).slice(1)),
        (pl.Series(hyps), pl.Series(refs)),
        (tuple(hyps), tuple(refs)),
    ]
    for h, r in inputs:
        assert metrics.sentence_bleu(h, r).tobytes() == expected.tobytes()


def test_bad_input_raises_clear_errors():
    from kdlens.errors import KdlensError

    with pytest.raises(KdlensError, match=r"hyps\[1\] is null"):
        metrics.sentence_bleu(["a", None], ["a", "b"])
    with pytest.raises(KdlensError, match="1 rows but there are 2"):
        metrics.sentence_bleu(["a", "b"], ["a"])
    with pytest.raises(KdlensError, match="not a str"):
        metrics.sentence_bleu(["a", 3], ["a", "b"])
    with pytest.raises(KdlensError, match="unknown tokenize"):
        metrics.sentence_bleu(["a"], ["a"], tokenize="zh-cn")
    with pytest.raises(KdlensError, match="smooth_method"):
        metrics.corpus_bleu(["a"], ["a"], smooth_method="add-one")
