"""A pinned loss trajectory for SFT and KD (torchtune's recipe tests do the same), and the token
counts the loop normalises by.

The trajectory is not pasted from our own output: each test computes it once from an independent
plain-PyTorch loop on a copy of the same initial student (full logits from the model's own forward,
``F.cross_entropy`` / a hand-written forward KL, one batch per step, ``torch.optim.AdamW``, the
warmup-then-linear learning rate written out, gradient clipping), and the trainer's logged losses
must follow it step by step. Run: ``python -m pytest tests/train/test_trajectory.py -q``.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from kdlens.data.collate import IGNORE_INDEX, collate
from kdlens.train import Trainer
from kdlens.train.step import step_token_counts

STEPS = 4


def _plain_loop(trainer, student, teacher, steps, temperature):
    cfg = trainer.cfg
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    w = cfg.kd_weight if teacher is not None else 0.0
    losses = []
    for step in range(1, steps + 1):
        s = step - 1  # learning rate of update s: warmup (s + 1) / warm, then linear decay to 0
        factor = (s + 1) / cfg.warmup_steps if s < cfg.warmup_steps else (
            (steps - s) / max(1, steps - cfg.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = cfg.lr * factor
        batch = collate([trainer.train_examples[i] for i in trainer.step_indices(step)],
                        trainer.tokenizer.pad_token_id)
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                             ignore_index=IGNORE_INDEX)
        loss = (1 - w) * ce
        if teacher is not None:
            with torch.no_grad():
                zt = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            log_p = torch.log_softmax(zt / temperature, -1)
            kl = (log_p.exp() * (log_p - torch.log_softmax(logits / temperature, -1))).sum(-1)
            m = batch["attention_mask"].bool()
            loss = loss + w * kl[m].sum() / m.sum() * temperature**2
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("mode", ["sft", "kd"])
def test_loss_trajectory_follows_a_plain_pytorch_loop(base_cfg, task_dir, teacher_dir, tmp_path, mode):
    kw = dict(max_steps=STEPS, micro_batch_size=4, grad_accum=2, warmup_steps=2, lr=3e-3, log_every=1)
    temperature = 2.0
    if mode == "kd":
        kw.update(mode="kd", teacher=str(teacher_dir), objective="forward_kl", temperature=temperature,
                  loss_implementation="chunked")
    (tmp_path / "run").mkdir()  # train() makes the folder; the test drives the Trainer itself
    trainer = Trainer(base_cfg(task_dir, tmp_path / "run", **kw))
    student = copy.deepcopy(trainer.student)  # the initial weights, before any step
    teacher = trainer.teacher
    trainer.run()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ours = [row["loss"] for row in logged if "loss" in row]
    reference = _plain_loop(trainer, student, teacher, STEPS, temperature)
    assert len(ours) == STEPS
    assert ours == pytest.approx(reference, rel=2e-4)
    assert reference[-1] < reference[0]  # it trains: a trajectory, not one repeated number


def test_token_counts_the_loop_normalises_by(base_cfg, task_dir, tmp_path):
    trainer = Trainer(base_cfg(task_dir, tmp_path / "run", micro_batch_size=3, grad_accum=2,
                               pad_to_multiple_of=8))
    examples = [[trainer.train_examples[i] for i in idx] for idx in trainer.rank_micro_batches(1)]
    # from the examples themselves, no collation: N_ce counts the next-token targets whose label is
    # not ignored (each example's labels[1:]); N_kd counts every real (unpadded) token
    want_ce = sum(1 for mb in examples for e in mb for t in e.labels[1:] if t != IGNORE_INDEX)
    want_kd = sum(len(e.input_ids) for mb in examples for e in mb)
    batches = [collate(mb, trainer.tokenizer.pad_token_id, pad_to_multiple_of=8) for mb in examples]
    assert step_token_counts(batches) == (want_ce, want_kd)
    assert want_ce < want_kd  # the prompt's first token and every example's first label never count
    assert trainer.compute_step(1)["tokens"] == want_kd
