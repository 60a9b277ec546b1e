"""A small synthetic study in kdlens's tidy schema whose analysis answers are known by construction.

One teacher (tiny-teacher, SFT 80) and three students (tiny-s1/s2/s3, sizes given explicitly in
``student_size_b`` because the names carry none; SFT 40/50/60). Every KD run scores
``SFT + GAIN[student][method] - T_PENALTY[T] - NOISE_PENALTY[sigma]``, so each unit's max over
temperatures is at T = 2 and its improvement is exactly GAIN. Task-unaware teacher runs score
``SFT - 30``. Agreement depends on T (so the T = 2 row must be the one joined), fidelity does not.
Imported by tests/stats and tests/report (by path).
"""

from __future__ import annotations

import polars as pl

STUDENTS = {"tiny-s1": 0.001, "tiny-s2": 0.002, "tiny-s3": 0.004}
SFT = {"tiny-s1": 40.0, "tiny-s2": 50.0, "tiny-s3": 60.0, "tiny-teacher": 80.0}
METHODS = ("SeqKD", "RevKD", "GKD")
GAIN = {
    "tiny-s1": {"SeqKD": 6.0, "RevKD": 9.0, "GKD": 7.5},
    "tiny-s2": {"SeqKD": 3.0, "RevKD": 4.0, "GKD": 5.0},
    "tiny-s3": {"SeqKD": 1.0, "RevKD": -0.5, "GKD": 2.0},
}
T_PENALTY = {1.0: 1.0, 2.0: 0.0, 5.0: 10.0}
NOISE_PENALTY = {0.0: 0.0, 1.0: 2.0, 5.0: 20.0}
TEACHER = "tiny-teacher"


def agreement_value(student, method, temperature):
    return 30.0 + 10.0 * temperature + GAIN[student][method]


def fidelity_value(student, method):
    return 20.0 + 3.0 * GAIN[student][method] + STUDENTS[student] * 1000


def score_rows():
    rows = []
    base = {"task": "synthetic", "family": "synthetic"}
    for model, sft in SFT.items():
        size = STUDENTS.get(model, 0.016)
        rows.append({**base, "teacher": None, "student": model, "method": "SFT", "temperature": None,
                     "noise_sigma": 0.0, "teacher_kind": None, "score": sft, "student_size_b": size})  # fmt: skip
    for student, size in STUDENTS.items():
        for method in METHODS:
            for t, pen in T_PENALTY.items():
                for sigma, npen in NOISE_PENALTY.items():
                    if sigma and (method != "SeqKD" or t != 1.0):
                        continue  # the noise sweep: SeqKD at T = 1 only, as kdlens's grid runs it
                    rows.append({**base, "teacher": TEACHER, "student": student, "method": method,
                                 "temperature": t, "noise_sigma": sigma, "teacher_kind": "task_aware",
                                 "score": SFT[student] + GAIN[student][method] - pen - npen,
                                 "student_size_b": size})  # fmt: skip
        rows.append({**base, "teacher": TEACHER, "student": student, "method": "SeqKD", "temperature": 1.0,
                     "noise_sigma": 0.0, "teacher_kind": "task_unaware", "score": SFT[student] - 30.0,
                     "student_size_b": size})  # fmt: skip
    return rows


def scores_frame() -> pl.DataFrame:
    return pl.DataFrame(score_rows())


def agreement_frame() -> pl.DataFrame:
    rows = []
    for student in STUDENTS:
        rows.append({"teacher": TEACHER, "student": student, "method": "SFT", "temperature": None,
                     "task": "synthetic", "family": "synthetic", "agreement": 25.0})  # fmt: skip
        for method in METHODS:
            for t in T_PENALTY:
                rows.append({"teacher": TEACHER, "student": student, "method": method, "temperature": t,
                             "task": "synthetic", "family": "synthetic",
                             "agreement": agreement_value(student, method, t)})  # fmt: skip
    return pl.DataFrame(rows)


def fidelity_frame() -> pl.DataFrame:
    rows = [
        {"teacher": TEACHER, "student": s, "method": m, "task": "synthetic", "family": "synthetic",
         "fidelity": fidelity_value(s, m)}
        for s in STUDENTS for m in METHODS
    ]  # fmt: skip
    return pl.DataFrame(rows)


def units_expected():
    """[(student, method, improvement, size, agreement at T=2, fidelity)] for the 9 units."""
    return [
        (s, m, GAIN[s][m], STUDENTS[s], agreement_value(s, m, 2.0), fidelity_value(s, m))
        for s in STUDENTS for m in METHODS
    ]  # fmt: skip
