"""Answer extraction rules of the paper (design/paper.md sections 5 and 6), run in Rust.

This is the single implementation every stage uses (evaluation, agreement, the fidelity CLI):

* math (gsm8k, svamp, multiarith, singleeq, addsub, synthetic): :data:`LAST_NUMBER` - commas
  removed, the LAST match of ``-?\\d+\\.?\\d*`` read as a float; correct when
  ``|gold - pred| <= 1e-3``; no number means no answer.
* aqua: :data:`AQUA_LETTER` - the FIRST of ``A|B|C|D|E`` anywhere (case-sensitive, so the "A" of
  "Answer" counts, a known quirk of the paper's code); exact string match.
* commonsense: the FIRST match of the task's lowercase label pattern (boolq ``true|false``, piqa
  ``solution1|solution2``, siqa/arc/obqa ``answer1..answer5``, hellaswag ``ending1..ending4``,
  winogrande ``option1|option2``); exact string match.

Tests: ``python -m pytest tests/metrics/test_answers.py -q`` (a plain-Python transcription of the
rules in the tests is the reference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdlens import _native
from kdlens.errors import KdlensError


@dataclass(frozen=True)
class AnswerRule:
    """How to read an answer from a generated text.

    ``kind`` is ``"last_number"`` (numeric, compared within ``tolerance``) or ``"first_match"``
    (the first occurrence of any of ``labels``, compared as exact strings).
    """

    name: str
    kind: str
    labels: tuple[str, ...] = ()
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in ("last_number", "first_match"):
            raise KdlensError(f"unknown answer rule kind {self.kind!r}; use last_number or first_match")
        if self.kind == "first_match" and not self.labels:
            raise KdlensError(f"answer rule {self.name!r} needs at least one label")


LAST_NUMBER = AnswerRule("last_number", "last_number", tolerance=1e-3)
AQUA_LETTER = AnswerRule("aqua_letter", "first_match", ("A", "B", "C", "D", "E"))
BOOLQ = AnswerRule("boolq", "first_match", ("true", "false"))
PIQA = AnswerRule("piqa", "first_match", ("solution1", "solution2"))
ANSWER_1_TO_5 = AnswerRule("answer1-5", "first_match", tuple(f"answer{i}" for i in range(1, 6)))
HELLASWAG = AnswerRule("hellaswag", "first_match", tuple(f"ending{i}" for i in range(1, 5)))
WINOGRANDE = AnswerRule("winogrande", "first_match", ("option1", "option2"))

TASK_RULES: dict[str, AnswerRule] = {
    "gsm8k": LAST_NUMBER,
    "svamp": LAST_NUMBER,
    "multiarith": LAST_NUMBER,
    "singleeq": LAST_NUMBER,
    "addsub": LAST_NUMBER,
    "synthetic": LAST_NUMBER,
    "aqua": AQUA_LETTER,
    "boolq": BOOLQ,
    "piqa": PIQA,
    "siqa": ANSWER_1_TO_5,
    "arc_challenge": ANSWER_1_TO_5,
    "arc_easy": ANSWER_1_TO_5,
    "obqa": ANSWER_1_TO_5,
    "hellaswag": HELLASWAG,
    "winogrande": WINOGRANDE,
}

MATH_TASKS = ("gsm8k", "svamp", "multiarith", "singleeq", "addsub", "aqua")
COMMONSENSE_TASKS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_challenge", "arc_easy",
                     "obqa")

_ALIASES = {"social_i_qa": "siqa", "socialiqa": "siqa", "openbookqa": "obqa", "arc_c": "arc_challenge",
            "arc_e": "arc_easy"}


def canonical_task(name: str) -> str:
    """Canonical lowercase task key for names as they appear in the paper's files
    (``ARC-Easy`` -> ``arc_easy``, ``social_i_qa`` -> ``siqa``, ``SVAMP`` -> ``svamp``)."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return _ALIASES.get(key, key)


def rule_for_task(name: str) -> AnswerRule:
    """The answer rule of a task, accepting the case/alias variants of the paper's result files."""
    key = canonical_task(name)
    try:
        return TASK_RULES[key]
    except KeyError:
        raise KdlensError(
            f"no answer rule for task {name!r}; known tasks: {', '.join(sorted(TASK_RULES))} "
            f"(aliases: {', '.join(sorted(_ALIASES))})") from None


def _as_rule(rule: AnswerRule | str) -> AnswerRule:
    return rule_for_task(rule) if isinstance(rule, str) else rule


def extract_answers(texts: Any, rule: AnswerRule | str, num_threads: int | None = None) -> list[str | None]:
    """The extracted answer of every text (None where the rule finds none), in Rust, in parallel.

    For the number rule the matched text is returned with commas removed (e.g. ``"1234"``,
    ``"18."``); compare with :func:`answers_match` / :func:`is_correct`, which read it as a float.
    """
    from kdlens.metrics import text_column

    r = _as_rule(rule)
    try:
        return _native.extract_answers(text_column(texts, "texts"), r.kind, list(r.labels),
                                       r.tolerance, num_threads)
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


def is_correct(outputs: Any, golds: Any, rule: AnswerRule | str,
               num_threads: int | None = None) -> np.ndarray:
    """Vectorised: extract from each output and compare with its gold answer (bool array)."""
    from kdlens.metrics import is_correct as _is_correct

    return _is_correct(outputs, golds, _as_rule(rule), num_threads)


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
    "answers_match",
    "canonical_task",
    "extract_answer",
    "extract_answers",
    "is_correct",
    "rule_for_task",
]
