"""Fidelity and agreement metrics: sacreBLEU-exact BLEU and answer agreement, computed in Rust.

Layers, each importing only the ones before it:
``columns`` (string columns as Rust reads them) -> ``bleu`` (sacreBLEU-exact BLEU) and ``answers``
(the paper's answer rules: extraction, agreement, accuracy) -> ``pairs`` (the one teacher-student
scorer, used by ``kdlens compare``, ``kdlens fidelity`` and the study) -> ``stream`` (``kdlens
fidelity``'s bounded-memory file front end).

This package re-exports the public functions, so ``kdlens.metrics.sentence_bleu(...)`` works.
Tests: ``python -m pytest tests/metrics -q``.
"""

from kdlens.metrics.answers import (
    AnswerRule,
    accuracy,
    agreement,
    agreement_per_item,
    extract_answers,
    is_correct,
    rule_for_task,
)
from kdlens.metrics.bleu import (
    BLEUScore,
    BLEUStatistics,
    bleu_signature,
    bleu_statistics,
    corpus_bleu,
    sentence_bleu,
)
from kdlens.metrics.columns import text_column

__all__ = [
    "AnswerRule",
    "BLEUScore",
    "BLEUStatistics",
    "accuracy",
    "agreement",
    "agreement_per_item",
    "bleu_signature",
    "bleu_statistics",
    "corpus_bleu",
    "extract_answers",
    "is_correct",
    "rule_for_task",
    "sentence_bleu",
    "text_column",
]
