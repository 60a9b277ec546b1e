"""Training: SFT, task-aware teacher fine-tuning and KD, one loop (see :mod:`kdlens.train.loop`).

Public API: :class:`TrainConfig`, :data:`PRESETS`, :func:`train` -> :class:`TrainResult`.
CLI: ``kdlens train --config FILE [key=value ...]``.
"""

from kdlens.train.config import PRESETS, TrainConfig
from kdlens.train.loop import TrainResult, Trainer, train

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "Trainer", "train"]
