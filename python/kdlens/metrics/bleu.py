"""sacreBLEU-exact BLEU, computed in Rust: scores, signatures and per-segment statistics.

BLEU follows sacreBLEU 2.6 exactly (tokenizers 13a/intl/zh/char/none, lowercase, smoothing
exp/floor/add-k/none, effective order, several references, max n-gram order 1 to 9): scores agree
with sacrebleu to within 1e-9 on the 0-100 scale (tests/metrics). Every score carries a signature in
sacrebleu's format. Per-segment sufficient statistics are exposed as numpy arrays, so per-task
scores, subsets and bootstrap confidence intervals never re-tokenise.

Text columns may be Python lists of str, numpy string/object arrays, pyarrow (chunked) arrays or
Polars Series; Arrow columns are handed to Rust as buffers, lists are read in place. The Rust side
releases the GIL and uses all cores (``num_threads`` limits it); results do not depend on it.

The tokenizers that need external models (ja-mecab and ko-mecab: MeCab and its dictionaries;
flores101/flores200/spm: a SentencePiece model) are not built in: asking for one is an error that
says what sacreBLEU needs installed to compute it.

Tests: ``python -m pytest tests/metrics -q``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdlens import _native
from kdlens.errors import KdlensError
from kdlens.metrics.columns import check_threads, is_column_like, n_rows, text_column

SACREBLEU_VERSION = "2.6.0"  # the version whose numbers (and signature format) kdlens reproduces
TOKENIZERS = ("13a", "intl", "zh", "char", "none")
# sacreBLEU's tokenizers that need an external model: what to install to use them through sacrebleu
EXTERNAL_TOKENIZERS = {
    "ja-mecab": "MeCab and its IPA dictionary: pip install 'sacrebleu[ja]'",
    "ko-mecab": "MeCab-ko and its dictionary: pip install 'sacrebleu[ko]'",
    "spm": "sentencepiece and the FLORES-101 model: pip install sentencepiece (sacrebleu downloads the model)",
    "flores101": "sentencepiece and the FLORES-101 model: pip install sentencepiece (sacrebleu downloads the model)",
    "flores200": "sentencepiece and the FLORES-200 model: pip install sentencepiece (sacrebleu downloads the model)",
}
SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}
NGRAM_ORDER = 4  # sacreBLEU's default max_ngram_order
MAX_NGRAM_ORDER = 9  # the largest max_ngram_order kdlens (like sacreBLEU's formula) accepts

__all__ = [
    "BLEUScore",
    "BLEUStatistics",
    "bleu_signature",
    "bleu_statistics",
    "corpus_bleu",
    "sentence_bleu",
]


def _reference_streams(refs: Any) -> list:
    """One column of references, or a list of reference streams (each a column)."""
    if isinstance(refs, (list, tuple)) and len(refs) > 0 and all(is_column_like(r) for r in refs):
        return [text_column(r, f"refs[{k}]") for k, r in enumerate(refs)]
    return [text_column(refs, "refs")]


def _num_refs(streams: list) -> int | str:
    """sacrebleu's nrefs: the per-segment count of non-null references, or 'var' if it varies."""
    has_null = False
    for s in streams:
        if isinstance(s, list):
            has_null |= s.count(None) > 0
        else:
            has_null |= s[2] is not None
    if not has_null:
        return len(streams)
    counts = None
    for s in streams:
        if isinstance(s, list):
            valid = np.fromiter((x is not None for x in s), dtype=bool, count=len(s))
        else:
            valid = np.ones(len(s[0]) - 1, dtype=bool) if s[2] is None else s[2]
        counts = valid.astype(np.int64) if counts is None else counts + valid
    uniq = np.unique(counts)
    return int(uniq[0]) if len(uniq) == 1 else "var"


def _check_options(tokenize: str, smooth_method: str, max_ngram_order: int) -> None:
    if tokenize in EXTERNAL_TOKENIZERS:
        raise KdlensError(f"tokenize={tokenize!r} needs an external model kdlens does not bundle; score "
                          f"with sacrebleu after installing {EXTERNAL_TOKENIZERS[tokenize]}, or use one of "
                          f"kdlens's built-in tokenizers: {', '.join(TOKENIZERS)}")
    if tokenize not in TOKENIZERS:
        raise KdlensError(f"unknown tokenize={tokenize!r}; use one of {', '.join(TOKENIZERS)}")
    if smooth_method not in SMOOTH_DEFAULTS:
        raise KdlensError(f"unknown smooth_method={smooth_method!r}; use one of {', '.join(SMOOTH_DEFAULTS)}")
    if not 1 <= int(max_ngram_order) <= MAX_NGRAM_ORDER:
        raise KdlensError(f"max_ngram_order must be between 1 and {MAX_NGRAM_ORDER}, got {max_ngram_order}")


def bleu_signature(nrefs: int | str = 1, tokenize: str = "13a", lowercase: bool = False,
                   smooth_method: str = "exp", smooth_value: float | None = None,
                   effective_order: bool = False, n_bootstrap: int | None = None,
                   seed: int | str | None = None) -> str:
    """The signature sacrebleu 2.6 prints for these options (its exact format and key order)."""
    smooth = smooth_method
    default = SMOOTH_DEFAULTS[smooth_method]
    if default is not None:
        smooth += f"[{(default if smooth_value is None else smooth_value):.2f}]"
    parts = [f"nrefs:{nrefs}"]
    if n_bootstrap is not None:
        parts.append(f"bs:{n_bootstrap}")
    if seed is not None:
        parts.append(f"seed:{seed}")
    parts += [f"case:{'lc' if lowercase else 'mixed'}", f"eff:{'yes' if effective_order else 'no'}",
              f"tok:{tokenize}", f"smooth:{smooth}", f"version:{SACREBLEU_VERSION}"]
    return "|".join(parts)


# ------------------------------------------------------------------------------------------------
# scores


@dataclass
class BLEUScore:
    """A corpus BLEU score with its parts, like sacrebleu's BLEUScore (0-100 scale).

    ``counts``/``totals`` are what sacreBLEU reports: under add-k smoothing k is added to the
    orders above 1. ``raw_counts``/``raw_totals`` are the matched and total n-grams themselves.
    """

    score: float
    counts: list[int | float]
    totals: list[int | float]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    signature: str
    ci: tuple[float, float] | None = None  # (mean, half-width of the 95% interval), if bootstrapped
    raw_counts: list[int] = field(default_factory=list)
    raw_totals: list[int] = field(default_factory=list)
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.sys_len / self.ref_len if self.ref_len else 0

    def format(self, width: int = 2) -> str:
        """sacrebleu's one-line format: ``BLEU|<signature> = 34.21 70.0/45.2/... (BP = ...)``."""
        sc = f"{self.score:.{width}f}"
        if self.ci is not None:
            sc += f" (μ = {self.ci[0]:.{width}f} ± {self.ci[1]:.{width}f})"
        prec = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU|{self.signature} = {sc} {prec} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")

    def __str__(self) -> str:
        return self.format()


def _as_reported(x: float) -> int | float:
    """A count as sacreBLEU reports it: an int unless add-k added a fractional k."""
    return int(x) if float(x).is_integer() else float(x)


class BLEUStatistics:
    """Per-segment sufficient statistics: an int64 matrix (n, 2 + 2*order) with columns
    hyp_len, ref_len, correct_1..order, total_1..order (sacrebleu's segment statistics)."""

    def __init__(self, stats: np.ndarray, *, nrefs: int | str, tokenize: str, lowercase: bool,
                 max_ngram_order: int) -> None:
        self.stats = stats
        self.nrefs = nrefs
        self.tokenize = tokenize
        self.lowercase = lowercase
        self.max_ngram_order = max_ngram_order

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def hyp_len(self) -> np.ndarray:
        return self.stats[:, 0]

    @property
    def ref_len(self) -> np.ndarray:
        return self.stats[:, 1]

    @property
    def correct(self) -> np.ndarray:
        return self.stats[:, 2:2 + self.max_ngram_order]

    @property
    def total(self) -> np.ndarray:
        return self.stats[:, 2 + self.max_ngram_order:]

    def subset(self, index: Any) -> "BLEUStatistics":
        """Rows selected by a boolean mask or integer indices (e.g. one task)."""
        return BLEUStatistics(self.stats[index], nrefs=self.nrefs, tokenize=self.tokenize,
                              lowercase=self.lowercase, max_ngram_order=self.max_ngram_order)

    def signature(self, smooth_method: str = "exp", smooth_value: float | None = None,
                  use_effective_order: bool = False, **extra: Any) -> str:
        return bleu_signature(self.nrefs, self.tokenize, self.lowercase, smooth_method, smooth_value,
                              use_effective_order, **extra)

    def _score_row(self, row: np.ndarray, smooth_method: str, smooth_value: float | None,
                   use_effective_order: bool) -> tuple[float, list[float], float]:
        return _native.score_from_row([int(x) for x in row], self.max_ngram_order, smooth_method,
                                      None if smooth_value is None else float(smooth_value),
                                      use_effective_order)

    def corpus_score(self, smooth_method: str = "exp", smooth_value: float | None = None,
                     use_effective_order: bool = False, n_bootstrap: int = 1,
                     seed: int = 12345) -> BLEUScore:
        """Corpus BLEU of these segments (sacrebleu's corpus_score). With ``n_bootstrap > 1`` also
        sacrebleu's 95% bootstrap interval (same resampling indices; sums kept exact as integers)."""
        _check_options(self.tokenize, smooth_method, self.max_ngram_order)
        row = self.stats.sum(axis=0) if len(self.stats) else np.zeros(self.stats.shape[1], np.int64)
        score, precisions, bp, counts, totals = _native.score_parts(
            [int(x) for x in row], self.max_ngram_order, smooth_method,
            None if smooth_value is None else float(smooth_value), use_effective_order)
        o = self.max_ngram_order
        ci = None
        sig_extra: dict = {}
        if n_bootstrap > 1:
            ci = self.bootstrap_ci(n_bootstrap, seed, smooth_method, smooth_value, use_effective_order)
            sig_extra = {"n_bootstrap": n_bootstrap, "seed": seed}
        return BLEUScore(score=score, counts=[_as_reported(x) for x in counts],
                         totals=[_as_reported(x) for x in totals], precisions=list(precisions), bp=bp,
                         sys_len=int(row[0]), ref_len=int(row[1]),
                         signature=self.signature(smooth_method, smooth_value, use_effective_order,
                                                  **sig_extra),
                         ci=ci, raw_counts=[int(x) for x in row[2:2 + o]],
                         raw_totals=[int(x) for x in row[2 + o:]])

    def bootstrap_scores(self, n_bootstrap: int = 1000, seed: int = 12345, smooth_method: str = "exp",
                         smooth_value: float | None = None,
                         use_effective_order: bool = False) -> np.ndarray:
        """Corpus scores of ``n_bootstrap`` resamples (numpy's default_rng(seed).choice indices,
        as sacrebleu draws them)."""
        n = len(self.stats)
        if n == 0:
            raise KdlensError("cannot bootstrap an empty set of segments")
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
            raise KdlensError(f"n_bootstrap must be an integer >= 1 (sacrebleu uses 1000), got {n_bootstrap!r}")
        _check_options(self.tokenize, smooth_method, self.max_ngram_order)
        rng = np.random.default_rng(seed)
        idxs = rng.choice(n, size=(n_bootstrap, n), replace=True)
        # one native call: exact integer sums per resample and the corpus score, in parallel, GIL released
        return _native.resample_scores(np.ascontiguousarray(self.stats), np.ascontiguousarray(idxs, dtype=np.int64),
                                       self.max_ngram_order, smooth_method,
                                       None if smooth_value is None else float(smooth_value), use_effective_order)

    def bootstrap_ci(self, n_bootstrap: int = 1000, seed: int = 12345, smooth_method: str = "exp",
                     smooth_value: float | None = None,
                     use_effective_order: bool = False) -> tuple[float, float]:
        """(mean, half-width of the 95% interval) of the bootstrap scores, as sacrebleu reports."""
        raw = sorted(self.bootstrap_scores(n_bootstrap, seed, smooth_method, smooth_value,
                                           use_effective_order).tolist())
        lower_idx = len(raw) // 40
        upper_idx = len(raw) - lower_idx - 1
        return statistics.mean(raw), 0.5 * (raw[upper_idx] - raw[lower_idx])

    def sentence_scores(self, smooth_method: str = "exp", smooth_value: float | None = None,
                        use_effective_order: bool = True, num_threads: int | None = None) -> np.ndarray:
        """One BLEU per segment (sacrebleu's sentence_score for each), float64."""
        _check_options(self.tokenize, smooth_method, self.max_ngram_order)
        return _native.scores_from_stats(np.ascontiguousarray(self.stats), self.max_ngram_order,
                                         smooth_method,
                                         None if smooth_value is None else float(smooth_value),
                                         use_effective_order, check_threads(num_threads))


def bleu_statistics(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                    max_ngram_order: int = NGRAM_ORDER,
                    num_threads: int | None = None) -> BLEUStatistics:
    """Tokenise once and count: the sufficient statistics of every (hypothesis, references) segment.

    ``refs`` is one column of references (one per hypothesis) or a list of reference streams, each
    a column aligned with ``hyps``; a None inside a stream means that segment lacks that reference.
    """
    _check_options(tokenize, "exp", max_ngram_order)
    hyp_col = text_column(hyps, "hyps")
    streams = _reference_streams(refs)
    for k, s in enumerate(streams):
        if n_rows(s) != n_rows(hyp_col):
            raise KdlensError(f"reference stream {k} has {n_rows(s)} rows but there are "
                              f"{n_rows(hyp_col)} hypotheses; give one reference per hypothesis")
    try:
        stats = _native.bleu_stats(hyp_col, streams, tokenize, lowercase, int(max_ngram_order),
                                   check_threads(num_threads))
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot score BLEU: {exc}") from exc
    return BLEUStatistics(stats, nrefs=_num_refs(streams), tokenize=tokenize, lowercase=lowercase,
                          max_ngram_order=int(max_ngram_order))


def sentence_bleu(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                  smooth_method: str = "exp", smooth_value: float | None = None,
                  use_effective_order: bool = True, max_ngram_order: int = NGRAM_ORDER,
                  num_threads: int | None = None) -> np.ndarray:
    """sacrebleu.sentence_bleu for every pair at once: float64 array of scores (0-100)."""
    _check_options(tokenize, smooth_method, max_ngram_order)
    st = bleu_statistics(hyps, refs, tokenize=tokenize, lowercase=lowercase,
                         max_ngram_order=max_ngram_order, num_threads=num_threads)
    return st.sentence_scores(smooth_method, smooth_value, use_effective_order, num_threads)


def corpus_bleu(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                smooth_method: str = "exp", smooth_value: float | None = None,
                use_effective_order: bool = False, max_ngram_order: int = NGRAM_ORDER,
                n_bootstrap: int = 1, num_threads: int | None = None) -> BLEUScore:
    """sacrebleu.corpus_bleu: one BLEUScore (with signature) over all segments."""
    _check_options(tokenize, smooth_method, max_ngram_order)
    st = bleu_statistics(hyps, refs, tokenize=tokenize, lowercase=lowercase,
                         max_ngram_order=max_ngram_order, num_threads=num_threads)
    return st.corpus_score(smooth_method, smooth_value, use_effective_order, n_bootstrap)
