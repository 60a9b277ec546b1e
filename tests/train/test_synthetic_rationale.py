"""Tests of the synthetic task's "equations" rationale style and of the study's task options.

Run: ``python -m pytest tests/train/test_synthetic_rationale.py -q``.
"""

import json
import re

import pytest

from kdlens.data.synthetic import RATIONALE_STYLES, make_task
from kdlens.errors import KdlensError

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")
PLAIN = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
         "/": lambda x, y: x // y if x % y == 0 else None}


def test_equations_style_draws_the_same_problems_with_only_the_equations():
    full = make_task(seed=5, n_train=300, n_test=60, levels=(1, 2, 3))
    short = make_task(seed=5, n_train=300, n_test=60, levels=(1, 2, 3), rationale="equations")
    assert short.rationale == "equations" and full.rationale == "full"
    for f, s in zip(full.train + full.test, short.train + short.test, strict=True):
        assert {k: v for k, v in f.items() if k != "output"} == {k: v for k, v in s.items() if k != "output"}
        # the short output is exactly the full output's equations, then the answer sentence
        body, _, tail = s["output"].rpartition(" The answer is ")
        assert tail == f"{s['answer']}."
        equations = EQUATION.findall(body)
        assert " ".join(f"{a} {op} {b} = {c}." for a, op, b, c in equations) == body
        assert [e[:4] for e in equations] == re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", f["output"])
        for a, op, b, c in equations:  # independent arithmetic check
            assert PLAIN[op](int(a), int(b)) == int(c), s
        assert int(equations[-1][3]) == int(s["answer"])
        assert len(s["output"]) < len(f["output"])


def test_unknown_rationale_style_is_a_clear_error():
    assert RATIONALE_STYLES == ("full", "equations")
    with pytest.raises(KdlensError, match="rationale style"):
        make_task(n_train=5, n_test=5, rationale="terse")


def test_study_task_options_reach_the_generated_data(tmp_path):
    from kdlens.study.actions import UnitContext, run_task
    from kdlens.study.config import study_config_from_dict
    from kdlens.study.plan import plan_study

    cfg = study_config_from_dict({"task": {"kind": "synthetic", "n_train": 60, "n_test": 20,
                                           "levels": [1], "operations": ["add", "multiply_add"],
                                           "rationale": "equations"}})
    plan = plan_study(cfg)
    unit = plan.of_kind("task")[0]
    (tmp_path / "units" / unit.id).mkdir(parents=True)
    result = run_task(UnitContext(tmp_path, unit, cfg, plan))
    records = json.loads(open(result["train_file"]).read())
    expected = make_task(seed=0, n_train=60, n_test=20, levels=(1,), operations=("add", "multiply_add"),
                         rationale="equations")
    assert records == expected.train
    assert {r["level"] for r in records} == {1} and {r["op"] for r in records} == {"add", "multiply_add"}
    # defaults unchanged: both levels, all operations, full rationales
    default = study_config_from_dict({}).task
    assert (default.levels, default.operations, default.rationale) == ((1, 2), (), "full")
