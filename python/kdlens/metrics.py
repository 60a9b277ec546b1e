"""Fidelity and agreement metrics: sacreBLEU-exact BLEU and answer agreement, computed in Rust.

BLEU follows sacreBLEU 2.6 exactly (tokenizers 13a/intl/char/none, lowercase, smoothing
exp/floor/add-k/none, effective order, several references, max n-gram order up to 4): scores agree
with sacrebleu to within 1e-9 on the 0-100 scale (tests/metrics). Every score carries a signature in
sacrebleu's format. Per-segment sufficient statistics are exposed as numpy arrays, so per-task
scores, subsets and bootstrap confidence intervals never re-tokenise.

Text columns may be Python lists of str, numpy string/object arrays, pyarrow (chunked) arrays or
Polars Series; Arrow columns are handed to Rust as buffers, lists are read in place. The Rust side
releases the GIL and uses all cores (``num_threads`` limits it); results do not depend on it.

Tests: ``python -m pytest tests/metrics -q``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdlens import _native
from kdlens.answers import AnswerRule, rule_for_task
from kdlens.errors import KdlensError

SACREBLEU_VERSION = "2.6.0"  # the version whose numbers (and signature format) kdlens reproduces
TOKENIZERS = ("13a", "intl", "char", "none")
SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}
MAX_NGRAM_ORDER = 4

__all__ = [
    "BLEUScore",
    "BLEUStatistics",
    "accuracy",
    "agreement",
    "agreement_per_item",
    "bleu_signature",
    "bleu_statistics",
    "corpus_bleu",
    "is_correct",
    "sentence_bleu",
    "text_column",
]


# ------------------------------------------------------------------------------------------------
# input conversion


def _arrow_buffers(arr) -> tuple:
    """(offsets int64[n+1], data uint8, valid bool[n] | None) views of a pyarrow string array."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not (pa.types.is_large_string(arr.type)):
        if not (pa.types.is_string(arr.type) or pa.types.is_string_view(arr.type)
                or pa.types.is_large_string(arr.type)):
            raise KdlensError(f"expected a string column, got Arrow type {arr.type}")
        arr = arr.cast(pa.large_string())
    _, off_buf, data_buf = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=arr.offset + n + 1)[arr.offset:]
    data = (np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None and data_buf.size
            else np.zeros(0, dtype=np.uint8))
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return (offsets, data, valid)


def text_column(values: Any, what: str = "texts"):
    """Convert a column of strings to what the Rust side reads, without a Python loop per row."""
    if isinstance(values, list):
        return values
    if isinstance(values, str):
        raise KdlensError(f"{what} must be a column of strings, not a single str; wrap it in a list")
    module = type(values).__module__.split(".")[0]
    if module == "polars":
        import polars as pl

        return _arrow_buffers(values.to_arrow(compat_level=pl.CompatLevel.oldest()))
    if module == "pyarrow":
        return _arrow_buffers(values)
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise KdlensError(f"{what} must be one-dimensional, got shape {values.shape}")
        return values.tolist()
    if module == "pandas":
        return values.to_numpy(dtype=object).tolist()
    if isinstance(values, (tuple, range)) or hasattr(values, "__iter__"):
        return list(values)
    raise KdlensError(f"{what}: cannot read {type(values).__name__} as a column of strings")


def _n_rows(col) -> int:
    return len(col) if isinstance(col, list) else len(col[0]) - 1


def _is_column_like(x: Any) -> bool:
    return not isinstance(x, str) and x is not None and hasattr(x, "__len__")


def _reference_streams(refs: Any) -> list:
    """One column of references, or a list of reference streams (each a column)."""
    if isinstance(refs, (list, tuple)) and len(refs) > 0 and all(_is_column_like(r) for r in refs):
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
    """A corpus BLEU score with its parts, like sacrebleu's BLEUScore (0-100 scale)."""

    score: float
    counts: list[int]
    totals: list[int]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    signature: str
    ci: tuple[float, float] | None = None  # (mean, half-width of the 95% interval), if bootstrapped
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
        score, precisions, bp = self._score_row(row, smooth_method, smooth_value, use_effective_order)
        o = self.max_ngram_order
        ci = None
        sig_extra: dict = {}
        if n_bootstrap > 1:
            ci = self.bootstrap_ci(n_bootstrap, seed, smooth_method, smooth_value, use_effective_order)
            sig_extra = {"n_bootstrap": n_bootstrap, "seed": seed}
        return BLEUScore(score=score, counts=[int(x) for x in row[2:2 + o]],
                         totals=[int(x) for x in row[2 + o:]], precisions=list(precisions), bp=bp,
                         sys_len=int(row[0]), ref_len=int(row[1]),
                         signature=self.signature(smooth_method, smooth_value, use_effective_order,
                                                  **sig_extra),
                         ci=ci)

    def bootstrap_scores(self, n_bootstrap: int = 1000, seed: int = 12345, smooth_method: str = "exp",
                         smooth_value: float | None = None,
                         use_effective_order: bool = False) -> np.ndarray:
        """Corpus scores of ``n_bootstrap`` resamples (numpy's default_rng(seed).choice indices,
        as sacrebleu draws them)."""
        n = len(self.stats)
        if n == 0:
            raise KdlensError("cannot bootstrap an empty set of segments")
        rng = np.random.default_rng(seed)
        idxs = rng.choice(n, size=(n_bootstrap, n), replace=True)
        per_chunk = max(1, 4_000_000 // max(n, 1))
        scores = np.empty(n_bootstrap)
        for a in range(0, n_bootstrap, per_chunk):
            sums = self.stats[idxs[a:a + per_chunk]].sum(axis=1)
            for j, row in enumerate(sums):
                scores[a + j] = self._score_row(row, smooth_method, smooth_value, use_effective_order)[0]
        return scores

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
                                         use_effective_order, num_threads)


def bleu_statistics(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                    max_ngram_order: int = MAX_NGRAM_ORDER,
                    num_threads: int | None = None) -> BLEUStatistics:
    """Tokenise once and count: the sufficient statistics of every (hypothesis, references) segment.

    ``refs`` is one column of references (one per hypothesis) or a list of reference streams, each
    a column aligned with ``hyps``; a None inside a stream means that segment lacks that reference.
    """
    _check_options(tokenize, "exp", max_ngram_order)
    hyp_col = text_column(hyps, "hyps")
    streams = _reference_streams(refs)
    for k, s in enumerate(streams):
        if _n_rows(s) != _n_rows(hyp_col):
            raise KdlensError(f"reference stream {k} has {_n_rows(s)} rows but there are "
                              f"{_n_rows(hyp_col)} hypotheses; give one reference per hypothesis")
    try:
        stats = _native.bleu_stats(hyp_col, streams, tokenize, lowercase, int(max_ngram_order),
                                   num_threads)
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot score BLEU: {exc}") from exc
    return BLEUStatistics(stats, nrefs=_num_refs(streams), tokenize=tokenize, lowercase=lowercase,
                          max_ngram_order=int(max_ngram_order))


def sentence_bleu(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                  smooth_method: str = "exp", smooth_value: float | None = None,
                  use_effective_order: bool = True, max_ngram_order: int = MAX_NGRAM_ORDER,
                  num_threads: int | None = None) -> np.ndarray:
    """sacrebleu.sentence_bleu for every pair at once: float64 array of scores (0-100)."""
    _check_options(tokenize, smooth_method, max_ngram_order)
    st = bleu_statistics(hyps, refs, tokenize=tokenize, lowercase=lowercase,
                         max_ngram_order=max_ngram_order, num_threads=num_threads)
    return st.sentence_scores(smooth_method, smooth_value, use_effective_order, num_threads)


def corpus_bleu(hyps: Any, refs: Any, *, tokenize: str = "13a", lowercase: bool = False,
                smooth_method: str = "exp", smooth_value: float | None = None,
                use_effective_order: bool = False, max_ngram_order: int = MAX_NGRAM_ORDER,
                n_bootstrap: int = 1, num_threads: int | None = None) -> BLEUScore:
    """sacrebleu.corpus_bleu: one BLEUScore (with signature) over all segments."""
    _check_options(tokenize, smooth_method, max_ngram_order)
    st = bleu_statistics(hyps, refs, tokenize=tokenize, lowercase=lowercase,
                         max_ngram_order=max_ngram_order, num_threads=num_threads)
    return st.corpus_score(smooth_method, smooth_value, use_effective_order, n_bootstrap)


# ------------------------------------------------------------------------------------------------
# agreement and accuracy


def _rule(rule_or_task: AnswerRule | str) -> AnswerRule:
    return rule_for_task(rule_or_task) if isinstance(rule_or_task, str) else rule_or_task


def agreement_per_item(teacher_outputs: Any, student_outputs: Any, rule: AnswerRule | str,
                       num_threads: int | None = None) -> np.ndarray:
    """Bool per item: both outputs yield an answer under ``rule`` (or a task name) and they agree."""
    r = _rule(rule)
    try:
        return _native.agreement(text_column(teacher_outputs, "teacher_outputs"),
                                 text_column(student_outputs, "student_outputs"), r.kind,
                                 list(r.labels), r.tolerance, num_threads)
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot compute agreement: {exc}") from exc


def agreement(teacher_outputs: Any, student_outputs: Any, rule: AnswerRule | str,
              num_threads: int | None = None) -> float:
    """Teacher-student agreement rate in percent (an item without an answer on either side never
    agrees), the paper's section 6 metric."""
    per_item = agreement_per_item(teacher_outputs, student_outputs, rule, num_threads)
    return 100.0 * float(per_item.mean()) if len(per_item) else float("nan")


def is_correct(outputs: Any, golds: Any, rule: AnswerRule | str,
               num_threads: int | None = None) -> np.ndarray:
    """Bool per item: the answer extracted from the output matches the gold answer."""
    r = _rule(rule)
    if not isinstance(golds, list) and isinstance(golds, np.ndarray) and golds.dtype.kind in "fiu":
        golds = [repr(float(g)) for g in golds.tolist()]
    try:
        return _native.correct(text_column(outputs, "outputs"), text_column(golds, "golds"), r.kind,
                               list(r.labels), r.tolerance, num_threads)
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot score answers: {exc}") from exc


def accuracy(outputs: Any, golds: Any, rule: AnswerRule | str, num_threads: int | None = None) -> float:
    """Accuracy in percent against gold answers, with the paper's extraction rules."""
    ok = is_correct(outputs, golds, rule, num_threads)
    return 100.0 * float(ok.mean()) if len(ok) else float("nan")
