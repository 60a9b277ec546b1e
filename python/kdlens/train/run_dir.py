"""The run folder of a training run: its result record, the resume check and the metrics log.

``out_dir`` holds ``checkpoints/``, ``best/``, ``final/``, ``metrics.jsonl`` and, written last,
``result.json`` (:class:`TrainResult`): its presence means the run is complete.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.io import write_text_atomic
from kdlens.train import checkpoint as ckpt_io
from kdlens.train.config import RESUME_FREE_KEYS, TrainConfig


@dataclass(frozen=True)
class TrainResult:
    out_dir: str
    status: str  # "complete" or "stopped" (stop_after_steps)
    steps: int
    total_steps: int
    final_dir: str | None
    best_dir: str | None
    best_step: int | None
    best_val_ce: float | None
    final_val_ce: float | None
    train_loss: float | None
    tokens: int
    wall_s: float
    student_params: int
    student_size_b: float
    mode: str
    objective: str | None
    teacher_kind: str | None
    config: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_run_dir(cfg: TrainConfig) -> TrainResult | None:
    """The finished result of the run in ``cfg.out_dir`` (None when there is none yet); raises when
    the folder holds a run that may not be resumed with this config."""
    out = Path(cfg.out_dir)
    result = out / "result.json"
    ckpt = ckpt_io.latest_checkpoint(out / "checkpoints")
    if ckpt is None and not result.exists():
        return None
    previous = None
    if ckpt is not None:
        previous = ckpt_io.read_state(ckpt).get("config")
    elif result.exists():
        previous = json.loads(result.read_text()).get("config")
    if not cfg.resume:
        raise KdlensError(f"{out} already holds a run; pass resume=true to continue it, or choose another out_dir")
    if previous is not None:
        # a key the earlier run's kdlens did not have yet compares as its default
        defaults = TrainConfig.__dataclass_fields__
        previous = {**{k: defaults[k].default for k in defaults if k not in previous
                       and defaults[k].default is not dataclasses.MISSING}, **previous}
        diff = sorted(k for k in set(previous) | set(cfg.to_dict())
                      if k not in RESUME_FREE_KEYS and previous.get(k) != cfg.to_dict().get(k))
        if diff:
            shown = ", ".join(f"{k}: {previous.get(k)!r} -> {cfg.to_dict().get(k)!r}" for k in diff[:6])
            raise KdlensError(f"{out} holds a run with a different config ({shown}); resume with the same "
                              "config or choose another out_dir")
    if result.exists():
        data = json.loads(result.read_text())
        return TrainResult(**data)
    return None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        write_text_atomic(path, "".join(ln + "\n" for ln in keep))
