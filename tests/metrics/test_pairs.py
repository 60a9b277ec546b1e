"""The one teacher-student scorer (kdlens.metrics.pairs.score_pairs) on mixed tasks, row by row,
against the plain-Python transcription of the paper's rules (tests/metrics/test_answers.py) and
sacrebleu: extracted answers, agreement, both sides' correctness, BLEU; null where a task has no
answer rule (ROUGE-L tasks, unknown names)."""

from __future__ import annotations

import pytest

pa = pytest.importorskip("pyarrow")
sacrebleu = pytest.importorskip("sacrebleu")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kdlens.metrics.pairs import score_pairs  # noqa: E402
from test_answers import ALL_TASKS, MATH, PATTERNS, ref_agree, ref_correct, ref_extract, texts  # noqa: E402

NO_RULE = ["dolly", "not_a_task"]


def _gold(task, seed):
    if task in MATH:
        return ["3", "-3", "1000", "2.5", "7"][seed % 5]
    labels = PATTERNS[task].split("|")
    return labels[seed % len(labels)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALL_TASKS + NO_RULE), texts, texts, st.integers(0, 9)),
                min_size=1, max_size=30))
def test_score_pairs_row_by_row(rows):
    tasks = [r[0] for r in rows]
    t_out, s_out = [r[1] for r in rows], [r[2] for r in rows]
    golds = [_gold(task, seed) if task not in NO_RULE else "x" for task, _, _, seed in rows]
    ids = [str(i) for i in range(len(rows))]
    t = pa.table({"task": pa.array(tasks, pa.large_string()), "id": pa.array(ids, pa.large_string()),
                  "output": pa.array(t_out, pa.large_string()), "gold": pa.array(golds, pa.large_string())})
    s = pa.table({"task": t["task"], "id": t["id"], "output": pa.array(s_out, pa.large_string())})
    got = score_pairs(t, s, "gold").to_pydict()
    bleu = sacrebleu.BLEU(effective_order=True)
    for i, (task, a, b, _) in enumerate(rows):
        assert got["bleu"][i] == pytest.approx(bleu.sentence_score(b, [a]).score, abs=1e-9)
        if task in NO_RULE:
            assert got["agree"][i] is None and got["teacher_correct"][i] is None
            assert got["teacher_answer"][i] is None and got["student_answer"][i] is None
            continue
        assert got["teacher_answer"][i] == ref_extract(a, task), (task, a)
        assert got["student_answer"][i] == ref_extract(b, task), (task, b)
        assert got["agree"][i] == ref_agree(a, b, task), (task, a, b)
        assert got["teacher_correct"][i] == ref_correct(a, golds[i], task), (task, a, golds[i])
        assert got["student_correct"][i] == ref_correct(b, golds[i], task), (task, b, golds[i])
