"""Deterministic demo generations: realistic teacher/student reasoning pairs for math tasks.

``make_pairs(n, seed)`` writes nothing and needs no download: it builds word problems from
templates, a teacher rationale ("Step 1: ... The answer is X.") and a student rationale that
paraphrases, reorders, drops or garbles steps and sometimes reaches another number, so BLEU and
agreement are spread out like real KD students'. ``kdlens fidelity --demo`` scores these, and
benches/gen_pairs.py uses the same generator for the benchmarks (about 90 tokens per text).
"""

from __future__ import annotations

import random

TASKS = ("gsm8k", "svamp", "multiarith", "addsub")
NAMES = ["Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Yuki", "Ines"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "blocks", "shells", "cards"]
PLACES = ["store", "school", "park", "library", "market", "garden"]
STEP_OPENERS = [("Step {k}:", "Step {k}:"), ("First,", "To start,"), ("Next,", "Then"),
                ("So", "Therefore"), ("Now", "After that")]
SYNONYMS = {"has": "owns", "buys": "purchases", "gives": "hands", "total": "sum", "left": "remaining",
            "each": "every", "find": "compute", "number": "amount"}


def _problem(rng: random.Random) -> tuple[str, list[str], float]:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b, c = rng.randint(3, 60), rng.randint(2, 25), rng.randint(2, 9)
    place = rng.choice(PLACES)
    kind = rng.randrange(3)
    if kind == 0:
        total = a + b
        left = total - c
        steps = [f"{name} has {a} {item} and buys {b} more at the {place}.",
                 f"The total number of {item} is {a} + {b} = {total}.",
                 f"{name} gives {c} {item} to {other}, so {total} - {c} = {left} are left.",
                 f"The answer is {left}."]
        return f"{name} has {a} {item}, buys {b} and gives {c} to {other}.", steps, float(left)
    if kind == 1:
        total = a * c
        steps = [f"There are {c} boxes and each box holds {a} {item}.",
                 f"To find the total we multiply: {c} * {a} = {total}.",
                 f"So the {place} has {total:,} {item} in all.",
                 f"The answer is {total}."]
        return f"{c} boxes hold {a} {item} each.", steps, float(total)
    price = round(a / 4, 2)
    cost = round(price * b, 2)
    steps = [f"Each of the {item} costs ${price}.",
             f"{name} buys {b} of them, so the cost is {b} * {price} = {cost}.",
             f"After paying, {name} has spent ${cost} at the {place}.",
             f"The answer is {cost}."]
    return f"{item} cost ${price} each; {name} buys {b}.", steps, cost


def _teacher(steps: list[str], rng: random.Random) -> str:
    out = []
    for k, s in enumerate(steps[:-1], 1):
        out.append(f"Step {k}: {s}" if rng.random() < 0.7 else s)
    out.append(steps[-1])
    return " ".join(out)


def _student(steps: list[str], answer: float, rng: random.Random) -> str:
    out = []
    body = steps[:-1]
    if len(body) > 2 and rng.random() < 0.25:
        body = body[:1] + body[2:]  # skips a step
    if rng.random() < 0.15:
        body = list(reversed(body))
    for s in body:
        words = s.split(" ")
        words = [SYNONYMS.get(w, w) if rng.random() < 0.3 else w for w in words]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(["we", "then", "clearly", "so"]))
        opener = rng.choice(STEP_OPENERS)[rng.randrange(2)].format(k=len(out) + 1)
        out.append(f"{opener} {' '.join(words)}")
    final = answer
    if rng.random() < 0.3:  # a wrong final answer
        final = answer + rng.choice([-10, -2, -1, 1, 2, 5, 10])
    text = f"{final:g}" if final != int(final) else f"{int(final)}"
    out.append(rng.choice([f"The answer is {text}.", f"So the final answer is {text}.",
                           f"Answer: {text}", f"Therefore, {text}."]))
    return "\n".join(out) if rng.random() < 0.3 else " ".join(out)


def make_pairs(n: int = 4000, seed: int = 0, problems_per_text: int = 1) -> dict[str, list]:
    """``n`` teacher/student pairs as columns: task, id, gold, teacher_output, student_output.

    ``problems_per_text=2`` gives texts of about 90 tokens (the benchmarks' size); the gold and
    the final answer belong to the last problem."""
    rng = random.Random(seed)
    cols: dict[str, list] = {"task": [], "id": [], "gold": [], "teacher_output": [], "student_output": []}
    per_task = {t: 0 for t in TASKS}
    for _ in range(n):
        task = TASKS[rng.randrange(len(TASKS))]
        teacher_parts, student_parts = [], []
        for _ in range(problems_per_text):
            _, steps, answer = _problem(rng)
            teacher_parts.append(_teacher(steps, rng))
            student_parts.append(_student(steps, answer, rng))
        cols["task"].append(task)
        cols["id"].append(per_task[task])
        per_task[task] += 1
        cols["gold"].append(f"{answer:g}")
        cols["teacher_output"].append(" ".join(teacher_parts))
        cols["student_output"].append(" ".join(student_parts))
    return cols


def write_demo_inputs(folder, n: int = 4000, seed: int = 0):
    """Write teacher.jsonl and student.jsonl (task, id, output, gold) into ``folder``; return paths."""
    from pathlib import Path

    import polars as pl

    from kdlens.io import write_table_atomic

    cols = make_pairs(n, seed)
    folder = Path(folder)
    base = {"task": cols["task"], "id": cols["id"], "gold": cols["gold"]}
    teacher = write_table_atomic(pl.DataFrame({**base, "output": cols["teacher_output"]}),
                                 folder / "teacher.jsonl")
    student = write_table_atomic(pl.DataFrame({**base, "output": cols["student_output"]}),
                                 folder / "student.jsonl")
    return teacher, student
