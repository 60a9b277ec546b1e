"""The built-in offline task: procedurally generated arithmetic word problems with rationales.

Every record is in the LLM-Adapters format the paper trains on: ``instruction`` (the problem),
``input`` (""), ``output`` (a step-by-step rationale ending "The answer is N.") and ``answer`` (N
as a number string), plus ``op`` (operation type) and ``level`` (difficulty) for analysis.

Operation types: add, subtract, multiply, divide (always exact) and two-step combinations
(multiply-subtract, add-divide, subtract-add, multiply-add). Difficulty levels scale the operands:
level 1 uses one-digit numbers, level 2 up to two digits, level 3 larger numbers.

Rationale styles: ``"full"`` (default) narrates each step ("Tom starts with 9 pens and gives away
2. 9 - 2 = 7."); ``"equations"`` keeps only the equations ("9 - 2 = 7."), the same problems with a
shorter output, for small CPU studies where every generated token costs time.

Splits are deterministic by ``seed`` and never overlap: problems are drawn from one seeded stream,
and a problem goes to the test split or the train split by a stable hash of its text, so the test
set does not depend on ``n_train`` and no problem text appears in both splits.

:func:`train_tokenizer` trains a small byte-level BPE tokenizer locally with ``tokenizers`` (digits
are split one by one, which keeps arithmetic learnable for tiny models) and wraps it in a
``PreTrainedTokenizerFast`` with EOS and PAD tokens; :func:`write_task` writes train/test files and
the tokenizer to a folder, the form every other kdlens stage reads.

Tests: ``python -m pytest tests/train/test_synthetic.py -q``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdlens.errors import KdlensError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

_NAMES = ("Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ben", "Zoe", "Ravi", "Ida", "Max", "Lena")
_OBJECTS = ("apples", "pens", "books", "coins", "cards", "stones", "shells", "stamps", "eggs",
            "balls", "cups", "toys")
_CONTAINERS = ("boxes", "bags", "baskets", "packs", "jars", "crates")

# (low, high) of plain operands, (low, high) of factors and divisors, per difficulty level
_LEVELS = {
    1: ((1, 9), (2, 5)),
    2: ((10, 60), (2, 9)),
    3: ((40, 300), (3, 15)),
}

RATIONALE_STYLES = ("full", "equations")
_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")

OPERATIONS = ("add", "subtract", "multiply", "divide", "multiply_subtract", "add_divide",
              "subtract_add", "multiply_add")


@dataclass(frozen=True)
class SyntheticTask:
    """Train and test records of one generated task (lists of dicts, LLM-Adapters format)."""

    train: list[dict]
    test: list[dict]
    seed: int
    levels: tuple[int, ...]
    operations: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    rationale: str = "full"

    def texts(self, template=None) -> list[str]:
        """Full training texts of the train split (for tokenizer training)."""
        from kdlens.data.prompts import ALPACA

        t = template or ALPACA
        return [t.full_text(r["instruction"], r["input"], r["output"]) for r in self.train]


def _problem(op: str, level: int, rng: random.Random) -> tuple[str, str, int]:
    """One (question, rationale without the final sentence, answer) for an operation and level."""
    (lo, hi), (flo, fhi) = _LEVELS[level]
    name, friend = rng.sample(_NAMES, 2)
    obj = rng.choice(_OBJECTS)
    box = rng.choice(_CONTAINERS)
    def n():
        return rng.randint(lo, hi)
    def f():
        return rng.randint(flo, fhi)
    if op == "add":
        a, b = n(), n()
        c = a + b
        q = f"{name} has {a} {obj}. {friend} gives {name} {b} more {obj}. How many {obj} does {name} have now?"
        r = f"{name} starts with {a} {obj} and gets {b} more. {a} + {b} = {c}."
    elif op == "subtract":
        a, b = sorted((n(), n()), reverse=True)
        c = a - b
        q = f"{name} has {a} {obj} and gives {b} of them to {friend}. How many {obj} does {name} have left?"
        r = f"{name} starts with {a} {obj} and gives away {b}. {a} - {b} = {c}."
    elif op == "multiply":
        a, b = f(), n() if level > 1 else f()
        c = a * b
        q = f"{name} has {a} {box} with {b} {obj} in each. How many {obj} does {name} have in total?"
        r = f"There are {a} {box} with {b} {obj} each. {a} * {b} = {c}."
    elif op == "divide":
        k, b = f(), n() if level > 1 else f()
        a, c = k * b, b
        q = f"{name} shares {a} {obj} equally among {k} friends. How many {obj} does each friend get?"
        r = f"{a} {obj} are shared by {k} friends. {a} / {k} = {b}."
    elif op == "multiply_subtract":
        a, b = f(), f() if level == 1 else n()
        p = a * b
        d = rng.randint(1, p)
        c = p - d
        q = (f"{name} buys {a} {box} with {b} {obj} in each. "
             f"{name} then gives {d} {obj} to {friend}. How many {obj} does {name} have left?")
        r = f"First, {a} * {b} = {p} {obj}. Then {p} - {d} = {c}."
    elif op == "add_divide":
        k = f()
        total = k * rng.randint(1, max(2, hi // 2))
        a = rng.randint(0, total - 1) if total > 1 else 0
        a = max(1, a)
        b = total - a
        if b < 1:
            a, b = total - 1, 1
        c = total // k
        q = (f"{name} has {a} {obj} and {friend} has {b} {obj}. They put them together and split "
             f"them equally into {k} {box}. How many {obj} go in each of the {box}?")
        r = f"Together they have {a} + {b} = {total} {obj}. Then {total} / {k} = {c}."
    elif op == "subtract_add":
        a, b = sorted((n(), n()), reverse=True)
        d = n()
        p = a - b
        c = p + d
        q = (f"{name} has {a} {obj}, loses {b} of them, and then finds {d} more. "
             f"How many {obj} does {name} have now?")
        r = f"After losing {b}, {name} has {a} - {b} = {p}. Then {p} + {d} = {c}."
    elif op == "multiply_add":
        a, b, d = f(), f(), n()
        p = a * b
        c = p + d
        q = (f"{name} has {a} {box} with {b} {obj} in each and {d} loose {obj}. "
             f"How many {obj} does {name} have in total?")
        r = f"The {box} hold {a} * {b} = {p} {obj}. Then {p} + {d} = {c}."
    else:
        raise KdlensError(f"unknown synthetic operation {op!r}; known: {', '.join(OPERATIONS)}")
    return q, r, c


def _equations_only(rationale: str) -> str:
    """The equations of a full rationale, one sentence each ("9 - 2 = 7. 7 + 3 = 10.")."""
    return " ".join(f"{a} {op} {b} = {c}." for a, op, b, c in _EQUATION.findall(rationale))


def _in_test(text: str, seed: int, test_share: float) -> bool:
    digest = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < test_share


def make_task(
    seed: int = 0,
    n_train: int = 4000,
    n_test: int = 300,
    *,
    levels: Sequence[int] = (1, 2),
    operations: Sequence[str] = OPERATIONS,
    test_share: float = 0.2,
    rationale: str = "full",
) -> SyntheticTask:
    """Generate ``n_train`` training and ``n_test`` test problems, deterministically from ``seed``.

    Problems are drawn uniformly over ``operations`` x ``levels``; duplicates are skipped; each
    problem's split is fixed by a hash of its text (``test_share`` of them go to test), so the test
    set is the same for any ``n_train`` and the splits never share a problem. ``rationale`` picks
    the output style (:data:`RATIONALE_STYLES`); it changes only the ``output`` text, never which
    problems are drawn.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise KdlensError("make_task needs n_train >= 0, n_test >= 0 and at least one problem")
    bad_levels = [lv for lv in levels if lv not in _LEVELS]
    if not levels or bad_levels:
        raise KdlensError(f"unknown difficulty level(s) {bad_levels or levels}; known: {sorted(_LEVELS)}")
    bad_ops = [op for op in operations if op not in OPERATIONS]
    if not operations or bad_ops:
        raise KdlensError(f"unknown operation(s) {bad_ops or operations}; known: {', '.join(OPERATIONS)}")
    if not 0.0 < test_share < 1.0:
        raise KdlensError("test_share must be strictly between 0 and 1")
    if rationale not in RATIONALE_STYLES:
        raise KdlensError(f"unknown rationale style {rationale!r}; known: {', '.join(RATIONALE_STYLES)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    train: list[dict] = []
    test: list[dict] = []
    draws, useless_in_a_row = 0, 0
    while len(train) < n_train or len(test) < n_test:
        draws += 1
        if useless_in_a_row > 20000:  # the space of problems is exhausted
            raise KdlensError(
                f"could not generate {n_train}+{n_test} distinct problems with levels {list(levels)} "
                f"and operations {list(operations)}; ask for fewer or allow more kinds")
        op = rng.choice(list(operations))
        level = rng.choice(list(levels))
        question, rationale_text, answer = _problem(op, level, rng)
        if question in seen:
            useless_in_a_row += 1
            continue
        seen.add(question)
        if rationale == "equations":
            rationale_text = _equations_only(rationale_text)
        record = {
            "instruction": question,
            "input": "",
            "output": f"{rationale_text} The answer is {answer}.",
            "answer": str(answer),
            "op": op,
            "level": level,
        }
        target = test if _in_test(question, seed, test_share) else train
        limit = n_test if target is test else n_train
        if len(target) < limit:
            target.append(record)
            useless_in_a_row = 0
        else:
            useless_in_a_row += 1
    return SyntheticTask(train=train, test=test, seed=seed, levels=tuple(levels),
                         operations=tuple(operations),
                         meta={"test_share": test_share, "draws": draws}, rationale=rationale)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    *,
    min_frequency: int = 2,
    model_max_length: int = 512,
):
    """Train a byte-level BPE tokenizer on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Digits are pre-split one per token. EOS is ``<|endoftext|>``, PAD is ``<|pad|>`` (ids 0 and 1);
    no BOS is added. The result can be ``save_pretrained`` to a folder and loaded with
    ``AutoTokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260 + 2:
        raise KdlensError("vocab_size must be at least 262 (256 bytes + specials + a few merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    return wrapped


def write_task(
    out_dir: str | os.PathLike,
    task: SyntheticTask | None = None,
    *,
    vocab_size: int = 512,
    tokenizer=None,
    corpus: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``train.json``, ``test.json`` (JSON lists) and ``tokenizer/`` to ``out_dir``.

    A missing ``task`` is ``make_task()``; a missing ``tokenizer`` is trained on ``corpus`` (e.g.
    the pretraining corpus) and the task's train texts. Returns the paths written, keyed "train",
    "test", "tokenizer".
    """
    from kdlens.io import write_text_atomic

    task = task or make_task()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = train_tokenizer([*corpus, *task.texts()], vocab_size=vocab_size)
    paths = {"train": out / "train.json", "test": out / "test.json", "tokenizer": out / "tokenizer"}
    write_text_atomic(paths["train"], json.dumps(task.train, indent=1) + "\n")
    write_text_atomic(paths["test"], json.dumps(task.test, indent=1) + "\n")
    tokenizer.save_pretrained(str(paths["tokenizer"]))
    return paths


def answer_of(text: str) -> float | None:
    """The last number in ``text`` (commas removed) as a float, as the paper's math rule reads it.

    None when there is no number.

    A convenience for quick checks on this task; kdlens.metrics.answers is the product's implementation.
    """
    import re

    found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
    return float(found[-1]) if found else None



# ---------------------------------------------------------------------------------------------
# The generic pretraining corpus of the study's base models
# ---------------------------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
_ADJECTIVES = ("red", "blue", "green", "small", "big", "old", "new", "round", "heavy", "light")
_PLACES = ("in the park", "at home", "at school", "in the garden", "at the shop", "by the lake",
           "in the kitchen", "on the bus")
_VERBS = ("likes", "sees", "finds", "paints", "counts", "cleans", "carries", "sorts", "drops", "keeps")
_SIMPLE = ("The sun is hot.", "The sky is blue.", "Birds can fly.", "Fish live in water.",
           "A week has seven days.", "Snow is cold.", "Dogs like to run.", "Cats like to sleep.",
           "Trees are tall.", "Rain makes the grass wet.", "We read books at school.",
           "Friends like to share.", "A day has a morning and a night.")

CORPUS_KINDS = ("arithmetic", "counting", "english")


def _fact(rng: random.Random) -> str:
    """One arithmetic fact on small numbers ("7 + 5 = 12."): mostly one-digit operands, sometimes a
    two-digit number and a digit; the times table to 9 x 9; exact divisions by 1..9."""
    op = rng.choice("+-*/")
    small = rng.random() < 0.6
    if op == "+":
        a, b = rng.randint(0, 9) if small else rng.randint(10, 40), rng.randint(0, 9)
        if rng.random() < 0.5:
            a, b = b, a
        return f"{a} + {b} = {a + b}."
    if op == "-":
        b = rng.randint(0, 9)
        a = b + (rng.randint(0, 9) if small else rng.randint(10, 40))
        return f"{a} - {b} = {a - b}."
    if op == "*":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"{a} * {b} = {a * b}."
    b, c = rng.randint(1, 9), rng.randint(0, 9)
    return f"{b * c} / {b} = {c}."


def _counting(rng: random.Random) -> str:
    """Counting, number words and comparisons ("3, 4, 5, 6." / "Seven is 7." / "9 is more than 4.")."""
    kind = rng.randrange(4)
    if kind == 0:
        start, step = rng.randint(0, 30), rng.choice((1, 1, 2, 5, 10))
        return ", ".join(str(start + step * i) for i in range(rng.randint(4, 8))) + "."
    if kind == 1:
        n = rng.randrange(len(_NUMBER_WORDS))
        return f"{_NUMBER_WORDS[n].capitalize()} is {n}."
    if kind == 2:
        a, b = rng.sample(range(40), 2)
        return f"{max(a, b)} is more than {min(a, b)}." if rng.random() < 0.5 else \
            f"{min(a, b)} is less than {max(a, b)}."
    n = rng.randint(1, 9)
    return f"{n} and {n} make {2 * n}. Half of {2 * n} is {n}."


def _english(rng: random.Random) -> str:
    """One simple English sentence about people and things, with no question and no arithmetic."""
    kind = rng.randrange(4)
    name, friend = rng.sample(_NAMES, 2)
    obj = rng.choice(_OBJECTS)
    if kind == 0:
        return f"{name} {rng.choice(_VERBS)} the {rng.choice(_ADJECTIVES)} {obj} {rng.choice(_PLACES)}."
    if kind == 1:
        return f"{name} has {rng.randint(1, 12)} {obj}. {friend} has some {rng.choice(_CONTAINERS)}."
    if kind == 2:
        return f"{name} and {friend} play {rng.choice(_PLACES)}. They put the {obj} in the {rng.choice(_CONTAINERS)}."
    return rng.choice(_SIMPLE)


def make_pretraining_corpus(seed: int = 0, n_docs: int = 4000, *, sentences: tuple[int, int] = (3, 8)) -> list[str]:
    """A generic text corpus for pretraining the study's tiny base models (not the task).

    Each document is ``sentences`` (low, high) sentences drawn from three kinds: arithmetic facts on
    small numbers (half of the sentences: sums and differences of a number up to 49 and a digit, the
    times table to 9 x 9, exact divisions), counting and number words (a fifth), and simple English
    sentences about people and things (the names and objects of everyday text, never a question or
    a word problem). A base
    model pretrained on it knows numbers, arithmetic facts and simple English, and has never seen the
    task's prompt template, questions or answers: those come only with task fine-tuning.
    """
    if n_docs < 1:
        raise KdlensError("the pretraining corpus needs n_docs >= 1")
    lo, hi = sentences
    if not 1 <= lo <= hi:
        raise KdlensError("sentences must be (low, high) with 1 <= low <= high")
    rng = random.Random(f"kdlens-pretraining-corpus-{seed}")
    makers, weights = (_fact, _counting, _english), (0.5, 0.2, 0.3)
    return [" ".join(rng.choices(makers, weights)[0](rng) for _ in range(rng.randint(lo, hi)))
            for _ in range(n_docs)]


def write_pretraining_corpus(path: str | os.PathLike, *, seed: int = 0, n_docs: int = 4000) -> dict:
    """Write :func:`make_pretraining_corpus` as training records (``{"instruction": document,
    "input": "", "output": ""}``, read with the ``text`` prompt template: the document alone).
    Returns ``{"path": Path, "texts": list[str]}``."""
    from kdlens.io import write_text_atomic

    texts = make_pretraining_corpus(seed, n_docs)
    records = [{"instruction": t, "input": "", "output": ""} for t in texts]
    out = write_text_atomic(Path(path), json.dumps(records, indent=0) + "\n")
    return {"path": out, "texts": texts}
