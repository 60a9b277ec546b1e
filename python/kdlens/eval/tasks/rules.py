"""The answer-extraction rules of the paper (design/paper.md sections 5 and 6), as plain data.

Each task of the registry names one of these; :mod:`kdlens.metrics.answers` runs them in Rust.

* math (gsm8k, svamp, multiarith, singleeq, addsub, synthetic): :data:`LAST_NUMBER` - commas
  removed, the LAST match of ``-?\\d+\\.?\\d*`` read as a float; correct when
  ``|gold - pred| <= 1e-3``; no number means no answer.
* aqua: :data:`AQUA_LETTER` - the FIRST of ``A|B|C|D|E`` anywhere (case-sensitive, so the "A" of
  "Answer" counts, a known quirk of the paper's code); exact string match.
* commonsense: the FIRST match of the task's lowercase label pattern (boolq ``true|false``, piqa
  ``solution1|solution2``, siqa/arc/obqa ``answer1..answer5``, hellaswag ``ending1..ending4``,
  winogrande ``option1|option2``); exact string match.
"""

from __future__ import annotations

from dataclasses import dataclass

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
