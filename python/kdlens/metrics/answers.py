"""Answers: extraction, correctness, agreement and accuracy with the paper's rules, run in Rust.

The rules themselves (which task reads which answer how) live in the task registry,
:mod:`kdlens.eval.tasks` (see :mod:`kdlens.eval.tasks.rules` for the paper's rules); this module
runs them. It is the single implementation every stage uses (evaluation, ``kdlens compare``,
``kdlens fidelity``, the study). Depends only on :mod:`kdlens.metrics.columns` and the registry.

Tests: ``python -m pytest tests/metrics/test_answers.py -q`` (a plain-Python transcription of the
rules in the tests is the reference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdlens import _native
from kdlens.errors import KdlensError
from kdlens.eval.tasks import canonical_task, find_task, list_tasks
from kdlens.eval.tasks.rules import (
    ANSWER_1_TO_5,
    AQUA_LETTER,
    BOOLQ,
    HELLASWAG,
    LAST_NUMBER,
    PIQA,
    WINOGRANDE,
    AnswerRule,
)
from kdlens.metrics.columns import check_threads, text_column

# derived from the registry: task name -> rule, for every task scored by an extracted answer
TASK_RULES: dict[str, AnswerRule] = {t.name: t.rule for t in list_tasks() if t.rule is not None}
MATH_TASKS = tuple(t.name for t in list_tasks("math"))
COMMONSENSE_TASKS = tuple(t.name for t in list_tasks("commonsense"))


def task_rule(name: str) -> AnswerRule | None:
    """The answer rule of a task name or alias; None for unknown tasks and ROUGE-L tasks."""
    task = find_task(name)
    return None if task is None else task.rule


def rule_for_task(name: str) -> AnswerRule:
    """The answer rule of a task, accepting the case/alias variants of the paper's result files."""
    rule = task_rule(name)
    if rule is None:
        raise KdlensError(
            f"no answer rule for task {name!r}; known tasks: {', '.join(sorted(TASK_RULES))} "
            "(case, dashes and the registry's aliases are accepted, e.g. ARC-Easy, social_i_qa)")
    return rule


def _as_rule(rule: AnswerRule | str) -> AnswerRule:
    return rule_for_task(rule) if isinstance(rule, str) else rule


def extract_answers(texts: Any, rule: AnswerRule | str, num_threads: int | None = None) -> list[str | None]:
    """The extracted answer of every text (None where the rule finds none), in Rust, in parallel.

    For the number rule the matched text is returned with commas removed (e.g. ``"1234"``,
    ``"18."``); compare with :func:`answers_match` / :func:`is_correct`, which read it as a float.
    """
    r = _as_rule(rule)
    try:
        return _native.extract_answers(text_column(texts, "texts"), r.kind, list(r.labels),
                                       r.tolerance, check_threads(num_threads))
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot extract answers: {exc}") from exc


def extract_answer(text: str, rule: AnswerRule | str) -> str | None:
    """The extracted answer of one text."""
    return extract_answers([text], rule)[0]


def answers_match(pred: str | None, gold: Any, rule: AnswerRule | str) -> bool:
    """Does an extracted answer ``pred`` match ``gold`` (a gold answer or another extracted answer)?

    Numbers: both read as floats, ``|gold - pred| <= tolerance``; labels: exact strings.
    A missing answer (None) never matches.
    """
    r = _as_rule(rule)
    if pred is None or gold is None:
        return False
    if r.kind == "last_number":
        gold_text = gold if isinstance(gold, str) else repr(float(gold))
        # the "output" the Rust rule reads is the extracted number itself: its last number is itself
        return bool(_native.correct([str(pred)], [gold_text], r.kind, [], r.tolerance, None)[0])
    return str(pred) == str(gold)


def agreement_per_item(teacher_outputs: Any, student_outputs: Any, rule: AnswerRule | str,
                       num_threads: int | None = None) -> np.ndarray:
    """Bool per item: both outputs yield an answer under ``rule`` (or a task name) and they agree."""
    r = _as_rule(rule)
    try:
        return _native.agreement(text_column(teacher_outputs, "teacher_outputs"),
                                 text_column(student_outputs, "student_outputs"), r.kind,
                                 list(r.labels), r.tolerance, check_threads(num_threads))
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
    r = _as_rule(rule)
    try:
        return _native.correct(text_column(outputs, "outputs"), _gold_column(golds, r), r.kind,
                               list(r.labels), r.tolerance, check_threads(num_threads))
    except (TypeError, ValueError) as exc:
        raise KdlensError(f"cannot score answers: {exc}") from exc


def _gold_column(golds: Any, rule: AnswerRule):
    """Gold answers as the Rust side reads them: strings, where numbers (the paper's ``*_1.json``
    files hold floats) become the text of their float value.

    The paper reads a number gold with Python's ``float()``; kdlens also drops thousands commas
    ("1,000" is 1000, as the paper reads outputs) and reports a row the paper's code would crash
    on (a missing gold, a non-number) as a clear error naming the row.
    """
    module = type(golds).__module__.split(".")[0]
    if module == "polars" and golds.dtype.is_numeric():
        golds = golds.to_numpy()
    elif module == "pandas" and golds.dtype.kind in "fiu":
        golds = golds.to_numpy(dtype=np.float64, na_value=np.nan)
    elif module in ("polars", "pyarrow"):
        return text_column(golds, "golds")  # a string column, read in place
    if isinstance(golds, np.ndarray) and golds.dtype.kind in "fiu":
        values: list = golds.astype(np.float64).tolist()
    else:
        values = text_column(golds, "golds")
        if all(isinstance(g, str) for g in values):
            return values
    out = []
    for i, g in enumerate(values):
        if isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, float, np.integer, np.floating)):
            if g is not None and not isinstance(g, str):
                raise KdlensError(f"gold answer at row {i} is a {type(g).__name__} ({g!r}); "
                                  "give a number or a string")
            out.append(g)
            continue
        if rule.kind != "last_number":
            raise KdlensError(f"gold answer at row {i} is a number ({g!r}) but rule {rule.name!r} "
                              f"compares labels ({', '.join(rule.labels)}); give the label as a string")
        if np.isnan(g):
            raise KdlensError(f"gold answer at row {i} is missing (NaN); every row needs a gold answer")
        out.append(repr(float(g)))
    return out


def accuracy(outputs: Any, golds: Any, rule: AnswerRule | str, num_threads: int | None = None) -> float:
    """Accuracy in percent against gold answers, with the paper's extraction rules."""
    ok = is_correct(outputs, golds, rule, num_threads)
    return 100.0 * float(ok.mean()) if len(ok) else float("nan")


__all__ = [
    "AQUA_LETTER",
    "ANSWER_1_TO_5",
    "AnswerRule",
    "BOOLQ",
    "COMMONSENSE_TASKS",
    "HELLASWAG",
    "LAST_NUMBER",
    "MATH_TASKS",
    "PIQA",
    "TASK_RULES",
    "WINOGRANDE",
    "accuracy",
    "agreement",
    "agreement_per_item",
    "answers_match",
    "canonical_task",
    "extract_answer",
    "extract_answers",
    "is_correct",
    "rule_for_task",
    "task_rule",
]
