"""Types of kdlens._native, the pyo3 extension built from rust/src (py.rs is its only binding file).

Private API: kdlens.metrics converts inputs and wraps errors. CI checks this stub against the
built module with `python -m mypy.stubtest kdlens._native`.

A text column is a list of str (None = null) or Arrow-style buffers ``(offsets int64[n+1],
data uint8[m], valid bool[n] | None)``. Statistics matrices are int64 ``(n, 2 + 2 * max_order)``:
hyp_len, ref_len, correct_1..order, total_1..order.
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_TextColumn = (
    list[str] | list[str | None]
    | tuple[NDArray[np.int64], NDArray[np.uint8], NDArray[np.bool_] | None]
)

__all__ = [
    "__version__", "PYTHON_UNIDATA_VERSION", "REGEX_VERSION", "bleu_stats", "scores_from_stats",
    "resample_scores", "score_from_row", "score_parts", "tokenize", "py_lower", "char_classes", "extract_answers",
    "agreement", "correct",
]

__version__: str
PYTHON_UNIDATA_VERSION: str
REGEX_VERSION: str

def bleu_stats(
    hyps: _TextColumn,
    refs: Sequence[_TextColumn],
    tokenize: str = "13a",
    lowercase: bool = False,
    max_order: int = 4,
    num_threads: int | None = None,
) -> NDArray[np.int64]:
    """Sufficient statistics of every segment; ValueError if a segment has no reference."""

def scores_from_stats(
    stats: NDArray[np.int64],
    max_order: int = 4,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = True,
    num_threads: int | None = None,
) -> NDArray[np.float64]:
    """Sentence BLEU of each statistics row."""

def resample_scores(
    stats: NDArray[np.int64],
    resamples: NDArray[np.int64],
    max_order: int = 4,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
    num_threads: int | None = None,
) -> NDArray[np.float64]:
    """Corpus BLEU of each bootstrap resample: row r of ``resamples`` holds row indices into stats."""

def score_from_row(
    row: Sequence[int],
    max_order: int = 4,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> tuple[float, list[float], float]:
    """(score, precisions, brevity penalty) of one (summed) statistics row."""

def score_parts(
    row: Sequence[int],
    max_order: int = 4,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> tuple[float, list[float], float, list[float], list[float]]:
    """(score, precisions, bp, counts, totals): counts/totals as sacreBLEU reports them (k added under add-k)."""

def tokenize(text: str, tokenize: str = "13a", lowercase: bool = False) -> str:
    """sacreBLEU's preprocessing and tokenizer; tokens joined by single spaces."""

def py_lower(text: str) -> str:
    """Python's str.lower() as the native core implements it."""

def char_classes() -> NDArray[np.uint8]:
    """Per code point: bit 0 whitespace, 1 \\p{N}, 2 \\p{P}, 3 \\p{S}, 4 decimal digit."""

def extract_answers(
    texts: _TextColumn,
    kind: str,
    labels: Sequence[str],
    tolerance: float,
    num_threads: int | None = None,
) -> list[str | None]:
    """The extracted answer of every text (None = no answer)."""

def agreement(
    a: _TextColumn,
    b: _TextColumn,
    kind: str,
    labels: Sequence[str],
    tolerance: float,
    num_threads: int | None = None,
) -> NDArray[np.bool_]:
    """Per-item agreement of two output columns."""

def correct(
    outputs: _TextColumn,
    golds: _TextColumn,
    kind: str,
    labels: Sequence[str],
    tolerance: float,
    num_threads: int | None = None,
) -> NDArray[np.bool_]:
    """Per-item correctness of outputs against gold answers."""
