"""Resume safety (issue 12): a checkpoint cannot run code when resumed (item 7), and a run killed
after its last checkpoint but before final/ and result.json resumes to the same result (review T22)."""

import json

import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.train import train


class _RunsCode:
    """Unpickling this object calls os.system: what a hostile optimizer.pt would carry."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_resume_refuses_a_checkpoint_that_would_run_code(base_cfg, task_dir, tmp_path, monkeypatch):
    kw = dict(student="tiny:tiny-s2", lora=False, max_steps=4, save_every=2)
    part = train(base_cfg(task_dir, tmp_path / "part", stop_after_steps=2, **kw))
    assert part.status == "stopped"
    step = tmp_path / "part" / "checkpoints" / "step-2"
    # every state file of a genuine checkpoint loads without pickle code execution
    for name in ("optimizer.pt", "scheduler.pt", "rng-rank0.pt"):
        torch.load(step / name, weights_only=True)
    monkeypatch.chdir(tmp_path)
    for name in ("optimizer.pt", "rng-rank0.pt"):
        original = (step / name).read_bytes()
        torch.save({"state": {}, "param_groups": [], "x": _RunsCode()}, step / name)
        with pytest.raises(KdlensError, match=f"{name} holds objects other than tensors.*refuses"):
            train(base_cfg(task_dir, tmp_path / "part", resume=True, **kw))
        assert not (tmp_path / "PWNED").exists()
        (step / name).write_bytes(original)
    resumed = train(base_cfg(task_dir, tmp_path / "part", resume=True, **kw))
    assert resumed.status == "complete" and resumed.steps == 4


@pytest.mark.parametrize("killed_before", ["final", "result.json"])
def test_resume_after_the_last_checkpoint_gives_the_same_result(base_cfg, task_dir, tmp_path, monkeypatch,
                                                                 killed_before):
    """T22: killed after the last checkpoint, before final/ (or before result.json): the resumed run's
    result.json had train_loss null, and metrics.jsonl a second val_ce row for the last step."""
    from kdlens.train import checkpoint as ckpt_io
    from kdlens.train import loop

    kw = {"student": "tiny:tiny-s2", "lora": False, "max_steps": 4, "save_every": 2, "eval_every": 2}
    full = train(base_cfg(task_dir, tmp_path / "full", **kw))

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        if killed_before == "final":
            real = ckpt_io.save_model_dir
            m.setattr(ckpt_io, "save_model_dir", lambda path, *a, **k: killed() if path.name == "final"
                      else real(path, *a, **k))
        else:
            m.setattr(loop, "write_json_atomic", killed)
        with pytest.raises(Killed):
            train(base_cfg(task_dir, tmp_path / "part", **kw))
    assert (tmp_path / "part" / "checkpoints" / "step-4").is_dir()
    assert not (tmp_path / "part" / "result.json").exists()
    resumed = train(base_cfg(task_dir, tmp_path / "part", resume=True, **kw))
    assert resumed.train_loss == full.train_loss is not None
    assert (resumed.best_step, resumed.best_val_ce, resumed.final_val_ce) == (full.best_step, full.best_val_ce,
                                                                                 full.final_val_ce)
    rows = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")}  # noqa: E731
    assert [strip(r) for r in rows(tmp_path / "part")] == [strip(r) for r in rows(tmp_path / "full")]
    saved = json.loads((tmp_path / "part" / "result.json").read_text())
    assert saved["train_loss"] == full.train_loss


def test_resume_removes_what_a_killed_run_left_half_written(base_cfg, task_dir, tmp_path):
    """D10: a kill while a checkpoint, best/ or final/ was being written left its temporary folder."""
    kw = {"student": "tiny:tiny-s2", "lora": False, "max_steps": 4, "save_every": 2}
    assert train(base_cfg(task_dir, tmp_path / "r", stop_after_steps=2, **kw)).status == "stopped"
    stale = [tmp_path / "r" / "checkpoints" / ".step-3.tmp", tmp_path / "r" / ".best.old",
             tmp_path / "r" / ".final.tmp"]
    for folder in stale:
        folder.mkdir()
        (folder / "half.safetensors").write_bytes(b"x")
    assert train(base_cfg(task_dir, tmp_path / "r", resume=True, **kw)).status == "complete"
    assert not [p for p in stale if p.exists()]
