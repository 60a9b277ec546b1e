"""The zh tokenizer against sacreBLEU 2.6's TokenizerZh (issue 14 item 12), and the tokenizers that
need external models (ja-mecab, ko-mecab, flores spm) as clear errors.
Run: ``python -m pytest tests/metrics/test_bleu_zh.py -q``."""

import math

import pytest

from kdlens import _native, metrics
from kdlens.errors import KdlensError

sacrebleu = pytest.importorskip("sacrebleu")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh  # noqa: E402

ZH = TokenizerZh()


def sacre_zh(text):  # BLEU's preprocessing: rstrip, then the tokenizer
    return ZH(text.rstrip())


def test_every_code_point_is_classified_as_sacrebleu_does():
    """One line holding every code point (surrogates aside), each between two 'a's: which chars get
    spaces around them, including the ranges sacreBLEU writes as 5-digit \\u escapes."""
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    line = "a" + "a".join(chr(cp) for cp in cps) + "a"
    assert _native.tokenize(line, "zh", False) == sacre_zh(line)


CJK_PIECES = ["我喜欢", "苹果", "。", "，", "：", "“", "”", "！", "（", "）", "中文", "测试", "１２３", "Ａ",
              "ﾊﾟﾝ", "㐀", "䶵", "䶶", "龻", "龼", "豈", "…", "—", "’", "‘", "\u2000", "\u2001", "\u2a6d",
              "\u2a6e", "\u2f80", "\u2f81", "\u2fa1", "\u2fa2", "𠀀", "𪛖", "☃", "➿", "⻀", "⿰", "〇", "ㄅ",
              "㈠", "㌀", "︐", "︰", "ab", "Hello", " ", "  ", "\n", "\t", "\u3000", ".", ",", "1,000.5",
              "3.", "-", "5-3", "&quot;", "<skipped>", "-\n", "$", "'s", "e.g.", "x"]
texts = st.lists(st.one_of(st.sampled_from(CJK_PIECES), st.text(max_size=4)), max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_tokenization_matches_sacrebleu(text):
    assert _native.tokenize(text, "zh", False) == sacre_zh(text)
    assert _native.tokenize(text, "zh", True) == sacre_zh(text.lower())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=8))
def test_sentence_and_corpus_bleu_match_sacrebleu(rows):
    hyps = [h for h, _, _ in rows]
    refs1 = [r for _, r, _ in rows]
    refs2 = [r for _, _, r in rows]
    got = metrics.corpus_bleu(hyps, [refs1, refs2], tokenize="zh")
    want = sacrebleu.corpus_bleu(hyps, [refs1, refs2], tokenize="zh")
    assert math.isclose(got.score, want.score, abs_tol=1e-9)
    assert (got.sys_len, got.ref_len) == (want.sys_len, want.ref_len)
    assert "|tok:zh|" in got.signature
    per_item = metrics.sentence_bleu(hyps, [refs1, refs2], tokenize="zh")
    for i, h in enumerate(hyps):
        assert math.isclose(per_item[i], sacrebleu.sentence_bleu(h, [refs1[i], refs2[i]], tokenize="zh").score,
                            abs_tol=1e-9)


def test_a_cjk_corpus():
    hyps = ["我们今天去公园散步，天气很好。", "他在看书。", "机器翻译的质量越来越高了！"]
    refs = ["今天我们去公园散步，天气非常好。", "他正在看一本书。", "机器翻译质量越来越好。"]
    got = metrics.corpus_bleu(hyps, refs, tokenize="zh")
    want = sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh")
    assert math.isclose(got.score, want.score, abs_tol=1e-9) and got.score > 0
    assert got.signature == "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0"
    # with 13a the CJK runs stay whole words: a different, lower score
    assert metrics.corpus_bleu(hyps, refs).score < got.score


@pytest.mark.parametrize("name,install", [("ja-mecab", "sacrebleu[ja]"), ("ko-mecab", "sacrebleu[ko]"),
                                          ("flores101", "sentencepiece"), ("flores200", "sentencepiece"),
                                          ("spm", "sentencepiece")])
def test_external_model_tokenizers_say_what_to_install(name, install):
    with pytest.raises(KdlensError, match=rf"needs an external model.*{install.replace('[', '.').replace(']', '.')}"):
        metrics.sentence_bleu(["a"], ["a"], tokenize=name)
