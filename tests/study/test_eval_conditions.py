"""A study's evaluation units pass the prompt template and response cut on to kdlens.evaluate: the
template follows [train] unless [evaluate] names one; the paper preset asks for the paper's cut.
Run: ``python -m pytest tests/study/test_eval_conditions.py -q``."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from kdlens.errors import KdlensError


def _ctx(tmp_path, train, evaluate):
    unit = SimpleNamespace(params={"of": "sft-x"}, deps={})
    deps = {"task": {"eval_tasks": "synthetic", "data_dir": None}, "model": {"model": "m", "adapter": None}}
    return SimpleNamespace(cfg=SimpleNamespace(train=train, evaluate=evaluate), unit=unit, dir=Path(tmp_path),
                           dep=deps.__getitem__)


@pytest.mark.parametrize("train,evaluate,want", [
    ({}, {}, ("alpaca", "instruction")),
    ({"template": "alpaca-paper"}, {"response_cut": "paper"}, ("alpaca-paper", "paper")),
    ({"template": "alpaca-paper"}, {"template": "alpaca"}, ("alpaca", "instruction")),
])
def test_run_eval_passes_template_and_cut(tmp_path, monkeypatch, train, evaluate, want):
    import kdlens.eval.run as run_mod
    from kdlens.study import actions

    seen = {}

    def fake_evaluate(model, tasks, out_dir, **kw):
        seen.update(kw)
        raise KdlensError("stop here")

    monkeypatch.setattr(run_mod, "evaluate", fake_evaluate)
    with pytest.raises(KdlensError, match="stop here"):
        actions.run_eval(_ctx(tmp_path, train, evaluate))
    assert (seen["template"], seen["response_cut"]) == want


def test_unknown_evaluate_key_is_named(tmp_path):
    from kdlens.study import actions

    with pytest.raises(KdlensError, match=r"\[evaluate\] has unknown key\(s\) cut;.*response_cut"):
        actions.run_eval(_ctx(tmp_path, {}, {"cut": "paper"}))
