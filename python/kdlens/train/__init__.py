"""Training: SFT, task-aware teacher fine-tuning and KD, one loop (see :mod:`kdlens.train.loop`).

Public API: :class:`TrainConfig`, :data:`PRESETS`, :func:`train` -> :class:`TrainResult`.
CLI: ``kdlens train --config FILE [key=value ...]``.

The loop (and with it torch) is imported on first use, so the config alone (``kdlens study --dry-run``
checks every training section with it) works where torch is not installed.
"""

from kdlens.train.config import PRESETS, TrainConfig

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "Trainer", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "Trainer", "train"):
        from kdlens.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'kdlens.train' has no attribute {name!r}")
