"""Training data of a run: load and split the records, encode them, and the order of the steps.

The validation split is a seeded permutation of the records; each epoch visits the training
examples in its own seeded order (:data:`kdlens.train.step.EPOCH_ORDER` stream), and optimizer step
``k`` takes the next ``micro_batch_size * grad_accum * world`` positions of that endless stream,
micro-batch ``j`` going to rank ``j % world``.
"""

from __future__ import annotations

import numpy as np

from kdlens.data.collate import Example, encode_records
from kdlens.errors import KdlensError
from kdlens.train.config import TrainConfig
from kdlens.train.step import EPOCH_ORDER, mix_seed


def load_split_encode(cfg: TrainConfig, tokenizer, template) -> tuple[list[dict], list[Example], list[Example]]:
    """(training records, training examples, validation examples) of ``cfg.data``."""
    from kdlens.data.records import load_records

    ds = load_records(cfg.data, required=("instruction", "output"), defaults={"input": ""})
    records = [dict(r) for r in ds]
    for i, r in enumerate(records):
        if not isinstance(r.get("output"), str) or not isinstance(r.get("instruction"), str):
            raise KdlensError(f"{cfg.data}: record {i} has a non-string 'instruction' or 'output'")
    order = np.random.default_rng(cfg.seed).permutation(len(records))
    if cfg.val_size >= len(records):
        raise KdlensError(f"{cfg.data}: {len(records)} records cannot hold out val_size={cfg.val_size} "
                          "for validation; lower val_size")
    val = [records[i] for i in order[:cfg.val_size]]
    train = [records[i] for i in order[cfg.val_size:]]
    if cfg.max_train_records:
        train = train[:cfg.max_train_records]
    enc = dict(max_length=cfg.max_length, train_on_inputs=cfg.train_on_inputs,
               add_special_tokens=cfg.add_special_tokens)
    return (train, encode_records(train, tokenizer, template, **enc),
            encode_records(val, tokenizer, template, **enc))


class StepOrder:
    """Which examples each optimizer step and process uses (a part of :class:`~kdlens.train.loop.Trainer`;
    needs ``cfg``, ``train_examples``, ``global_batch`` and ``dist``)."""

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(mix_seed(self.cfg.seed, epoch, EPOCH_ORDER)).permutation(len(self.train_examples))

    def step_indices(self, step: int) -> list[int]:
        """Example indices of optimizer step ``step`` (1-based), over the endless epoch stream."""
        n = len(self.train_examples)
        start = (step - 1) * self.global_batch
        out = []
        for pos in range(start, start + self.global_batch):
            epoch, i = divmod(pos, n)
            if not out or i == 0 or pos == start:
                order = self._epoch_order(epoch)
            out.append(int(order[i]))
        return out

    def rank_micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches of the step: micro-batch j goes to rank j % world."""
        idx = self.step_indices(step)
        mb = self.cfg.micro_batch_size
        chunks = [idx[j * mb:(j + 1) * mb] for j in range(len(idx) // mb)]
        return [c for j, c in enumerate(chunks) if j % self.dist.world == self.dist.rank]
