"""The one training loop: SFT, task-aware teacher fine-tuning and KD (SeqKD, RevKD, GKD, ...).

``train(cfg)`` runs a :class:`~kdlens.train.config.TrainConfig` to completion (or resumes it) and
returns a :class:`TrainResult`. The run folder (``cfg.out_dir``) ends up holding::

    checkpoints/step-<k>/   atomic checkpoints (weights, optimizer, scheduler, RNG, step, config)
    best/                   model or LoRA adapter + tokenizer with the lowest validation CE
    final/                  model or LoRA adapter + tokenizer after the last step
    metrics.jsonl           one JSON line per logged step / evaluation
    result.json             written last, atomically: its presence means the run is complete

Loss of one optimizer step (``loss_normalization="global_tokens"``)::

    (1 - w) * sum CE_tokens / N_ce  +  w * sum KD_positions / N_kd

where the sums and counts run over every micro-batch of the step on every process, so gradient
accumulation and data parallelism do not change the loss (micro-batch 8 x 1 == 1 x 8). CE is the
next-token loss on shifted labels; KD compares teacher and student at the same positions, masked by
the attention mask (paper section 4). ``"paper"`` reproduces the released code instead: each
micro-batch uses the paper's reduction (sequence mean for KL, label count for JSD) and the
micro-batch losses are averaged over the accumulation steps.

Neither loss materialises full logits: the student's final hidden states and lm_head weight go to
kdlens.losses (fused/chunked) and to a chunked cross-entropy. torch.compile is applied in exactly
one place, :meth:`Trainer._compile` (the student forward and the teacher forward, dynamic shapes),
because that is where the time goes and graph breaks elsewhere (generation, Python bookkeeping)
would only cost recompiles; the KD loss's element-wise step is compiled inside kdlens.losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdlens.data.collate import (IGNORE_INDEX, Example, collate, encode_record, encode_records,
                                 shifted_labels)
from kdlens.errors import KdlensError
from kdlens.io import write_json_atomic, write_text_atomic
from kdlens.train import checkpoint as ckpt_io
from kdlens.train.config import RESUME_FREE_KEYS, TrainConfig
from kdlens.train.distributed import DistContext, setup_distributed


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


# ---------------------------------------------------------------------------------------------
# loss pieces
# ---------------------------------------------------------------------------------------------

def chunked_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sum of next-token cross-entropy over rows with target != -100, from hidden states [N, H] and
    the lm_head weight [V, H], ``chunk`` rows at a time (each chunk's logits are recomputed in the
    backward pass, so at most one chunk of logits is alive)."""
    from torch.utils.checkpoint import checkpoint

    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[keep], targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)

    def piece(h, w, t):
        return F.cross_entropy((h @ w.t()).float(), t, reduction="sum")

    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            total = total + checkpoint(piece, h, weight, t, use_reentrant=False)
        else:
            total = total + piece(h, weight, t)
    return total


def kd_term(cfg: TrainConfig, s_hidden, s_weight, t_hidden, t_weight, attention_mask, *, reduction: str,
            normalizer, noise_seed: int, noise_row_offset: int = 0) -> torch.Tensor:
    """The KD part of the loss via kdlens.losses (hidden-state form; ``logits`` = naive full logits).

    ``s_hidden``/``t_hidden`` are [B, S, H]; ``attention_mask`` [B, S] masks padding (paper: KD is
    masked only by the attention mask).
    """
    common = dict(objective=cfg.objective, temperature=cfg.temperature, scale_by_t2=cfg.scale_by_t2,
                  beta=cfg.beta, alpha=cfg.skew_alpha, noise_sigma=cfg.noise_sigma, noise_seed=noise_seed,
                  reduction=reduction, normalizer=normalizer)
    if cfg.loss_implementation == "logits":
        from kdlens.losses.options import KDOptions
        from kdlens.losses.reference import reference_kd_loss

        opts = KDOptions(objective=cfg.objective, temperature=cfg.temperature, scale_by_t2=cfg.scale_by_t2,
                         beta=cfg.beta, alpha=cfg.skew_alpha, noise_sigma=cfg.noise_sigma,
                         noise_seed=noise_seed, noise_row_offset=noise_row_offset, reduction=reduction)
        s_logits = (s_hidden @ s_weight.t()).float()
        t_logits = (t_hidden @ t_weight.t()).float()
        return reference_kd_loss(s_logits, t_logits, opts, attention_mask=attention_mask, normalizer=normalizer)
    from kdlens.losses import kd_loss

    # bf16 training: the lm_head GEMMs take bf16 operands (fp32 master weights would otherwise run plain
    # fp32 GEMMs, ~10x slower on a GPU); products accumulate in fp32 and dW stays fp32
    compute_dtype = torch.bfloat16 if uses_bf16(cfg, s_hidden.device) else None
    return kd_loss(student_hidden=s_hidden, student_weight=s_weight, teacher_hidden=t_hidden,
                   teacher_weight=t_weight, attention_mask=attention_mask,
                   implementation=cfg.loss_implementation, noise_row_offset=noise_row_offset,
                   compile=cfg.compile, compute_dtype=compute_dtype, **common)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast (and bf16 KD GEMM operands): ``bf16=on``, or ``auto`` on CUDA."""
    return cfg.bf16 == "on" or (cfg.bf16 == "auto" and device.type == "cuda")


def _mix_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (SplitMix64-style)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return int(x % (2**31 - 1))


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------

class Trainer:
    """Holds models, data and optimizer of one run; :meth:`run` is the loop."""

    def __init__(self, cfg: TrainConfig, dist: DistContext | None = None):
        self.cfg = cfg
        self.dist = dist or setup_distributed(cfg)
        self.device = self.dist.device
        self.out = Path(cfg.out_dir)
        self.autocast = uses_bf16(cfg, self.device)
        self._load_everything()

    # -------------------------------------------------------------- set-up
    def _load_everything(self) -> None:
        from kdlens.data.prompts import get_template
        from kdlens.data.records import load_records
        from kdlens.models import (align_vocabularies, build_student, load_causal_lm, load_tokenizer,
                                   size_in_billions)

        cfg = self.cfg
        tok_src = cfg.tokenizer or (None if cfg.student.startswith("tiny:") else cfg.student)
        if tok_src is None:
            raise KdlensError("student=tiny:<name> needs tokenizer=<folder> (e.g. the one write_task made)")
        self.tokenizer = load_tokenizer(tok_src, padding_side="left")
        self.template = get_template(cfg.template)
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
        self.train_records = train
        enc = dict(max_length=cfg.max_length, train_on_inputs=cfg.train_on_inputs)
        self.train_examples = encode_records(train, self.tokenizer, self.template, **enc)
        self.val_examples = encode_records(val, self.tokenizer, self.template, **enc)

        torch.manual_seed(cfg.seed)
        self.student = build_student(cfg, self.tokenizer).to(self.device)
        if cfg.student.startswith("tiny:") and cfg.lora and self.dist.rank == 0:
            # a LoRA adapter needs its base: keep the randomly initialised tiny model next to the run
            ckpt_io.save_model_dir(self.out / "base", _base_without_lora(self.student), self.tokenizer,
                                   {"tiny": cfg.student[5:], "seed": cfg.seed})
        self.student.train()
        self.student_size_b = size_in_billions(self.student)
        self.teacher = None
        if cfg.mode == "kd":
            self.teacher = load_causal_lm(cfg.teacher, adapter=cfg.teacher_adapter, device=self.device,
                                          dtype=getattr(torch, cfg.dtype), trainable=False)
            self.teacher.eval()
            teacher_tok = None
            with contextlib.suppress(KdlensError):
                teacher_tok = load_tokenizer(cfg.teacher)
            align_vocabularies(self.tokenizer, self.student, self.teacher, teacher_tok)
        if self.dist.kind == "fsdp" and cfg.mode == "kd" and cfg.onpolicy_lambda > 0:
            raise KdlensError("on-policy sampling (onpolicy_lambda > 0, GKD) is not supported with "
                              "distributed='fsdp': generation would run different collectives on each process; "
                              "use distributed=ddp or onpolicy_lambda=0")
        # wrap first: FSDP2 replaces the parameters by sharded ones, which the optimizer must hold
        self.core = self.dist.wrap(self._student_core())
        self.trainable = [p for p in self.student.parameters() if p.requires_grad]
        if not self.trainable:
            raise KdlensError("the student has no trainable parameters (check lora_targets)")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_step = cfg.micro_batch_size * cfg.grad_accum * self.dist.world
        self.global_batch = per_step
        if cfg.max_steps:
            self.total_steps = cfg.max_steps
        else:
            self.total_steps = max(1, math.ceil(cfg.epochs * len(self.train_examples) / per_step))
        warm, total = cfg.warmup_steps, self.total_steps

        def lr_lambda(step: int) -> float:
            if warm > 0 and step < warm:
                return (step + 1) / warm  # HF's schedule starts at 0; first update uses 1/warm
            return max(0.0, (total - step) / max(1, total - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self._compile()

    def _student_core(self) -> torch.nn.Module:
        return _StudentCore(self.student)

    def _compile(self) -> None:
        """The one place torch.compile is applied: the student forward (hidden states + lm_head, and
        its backward) and the frozen teacher's forward. Both are compiled with dynamic shapes, so the
        batch's sequence length (padded to ``pad_to_multiple_of``) does not trigger recompiles; the
        KD loss compiles its own element-wise step (kdlens.losses.chunked, row count dynamic)."""
        self.core_fn = self.core
        self.teacher_fn = _StudentCore(self.teacher) if self.teacher is not None else None
        if self.cfg.compile:
            self.core_fn = torch.compile(self.core, dynamic=True)
            if self.teacher_fn is not None:
                self.teacher_fn = torch.compile(self.teacher_fn, dynamic=True)

    # -------------------------------------------------------------- data order
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(_mix_seed(self.cfg.seed, epoch, 17)).permutation(len(self.train_examples))

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

    # -------------------------------------------------------------- on-policy (GKD)
    def _maybe_on_policy(self, examples: list[Example], step: int, micro: int) -> tuple[list[Example], bool]:
        cfg = self.cfg
        if cfg.mode != "kd" or cfg.onpolicy_lambda <= 0.0:
            return examples, False
        seed = _mix_seed(cfg.seed, step, micro, self.dist.rank, 101)
        if random.Random(seed).random() >= cfg.onpolicy_lambda:
            return examples, False
        return self._sample_from_student(examples, seed), True

    @torch.no_grad()
    def _sample_from_student(self, examples: list[Example], seed: int) -> list[Example]:
        """Replace a micro-batch by student samples (paper §4): prompts left-padded, do_sample, T=1,
        top_k=0, max_new_tokens = max_length - prompt length; decoded and re-tokenised."""
        cfg, tok = self.cfg, self.tokenizer
        prompts = [e.input_ids[:e.prompt_len] for e in examples]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        new_tokens = max(1, cfg.max_length - width)
        was_training = self.student.training
        self.student.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = self.student.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                        do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                        max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id)
        self.student.train(was_training)
        samples = []
        for i, row in enumerate(out[:, width:].tolist()):
            text = tok.decode(row, skip_special_tokens=True)
            prompt_text = tok.decode(prompts[i], skip_special_tokens=False)
            full = tok(prompt_text + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            full = full[:cfg.max_length]
            samples.append(Example(input_ids=full, labels=list(full), prompt_len=min(len(prompts[i]), len(full))))
        return samples

    # -------------------------------------------------------------- one optimizer step
    def _micro_loss(self, batch: dict, n_ce: torch.Tensor, n_kd: torch.Tensor, step: int, micro: int,
                    n_micro: int) -> tuple[torch.Tensor, float, float]:
        """Loss of one micro-batch, already divided by the step's normaliser (so the sum over micro-
        batches and processes is the step loss). Returns (loss to backward, ce part, kd part)."""
        cfg = self.cfg
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        targets = shifted_labels(batch["labels"]).to(self.device)
        world = self.dist.world
        w = cfg.kd_weight if cfg.mode == "kd" else 0.0
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with amp:
            hidden, weight = self.core_fn(ids, mask)
        ce = kd = hidden.new_zeros((), dtype=torch.float32)
        paper = cfg.loss_normalization == "paper"
        if w < 1.0:
            ce_sum = chunked_ce_sum(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                    cfg.loss_chunk_size)
            if paper:
                ce = ce_sum / (targets != IGNORE_INDEX).sum().clamp_min(1) / n_micro
            else:
                ce = ce_sum / n_ce.clamp_min(1) * world
        if w > 0.0:
            with torch.no_grad(), amp:
                t_hidden, t_weight = self.teacher_fn(ids, mask)
            seed = _mix_seed(cfg.seed, step, micro, self.dist.rank, 7)
            if paper:
                if cfg.objective == "jsd":
                    n_lab = ((batch["labels"] != IGNORE_INDEX)).sum().to(self.device)
                    kd = kd_term(cfg, hidden, weight, t_hidden, t_weight, mask, reduction="normalizer",
                                 normalizer=n_lab, noise_seed=seed) / n_micro
                else:
                    kd = kd_term(cfg, hidden, weight, t_hidden, t_weight, mask,
                                 reduction="paper_sequence_mean", normalizer=None, noise_seed=seed) / n_micro
            else:
                kd = kd_term(cfg, hidden, weight, t_hidden, t_weight, mask, reduction="normalizer",
                             normalizer=n_kd.float() / world, noise_seed=seed)
        loss = (1.0 - w) * ce + w * kd
        return loss, float(ce.detach()) / world, float(kd.detach()) / world

    def compute_step(self, step: int) -> dict[str, float]:
        """Forward and backward every micro-batch of ``step`` on this process (gradients accumulate
        into ``.grad``); returns the step's loss terms summed over processes."""
        cfg = self.cfg
        micro_batches = []
        for j, idx in enumerate(self.rank_micro_batches(step)):
            examples, sampled = self._maybe_on_policy([self.train_examples[i] for i in idx], step, j)
            micro_batches.append((collate(examples, self.tokenizer.pad_token_id,
                                          pad_to_multiple_of=cfg.pad_to_multiple_of), sampled))
        n_ce = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, _ in micro_batches)
        n_kd = sum(int(b["attention_mask"].sum()) for b, _ in micro_batches)
        tokens = n_kd
        counts = self.dist.all_reduce_sum(torch.tensor([n_ce, n_kd, tokens], dtype=torch.float64))
        n_ce_t = counts[0].to(self.device)
        n_kd_t = counts[1].to(self.device)
        totals = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
        for j, (batch, _) in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else self.dist.no_sync(self.core)
            with sync:
                loss, ce, kd = self._micro_loss(batch, n_ce_t, n_kd_t, step, j, len(micro_batches))
                loss.backward()
            totals["loss"] += float(loss.detach()) / self.dist.world
            totals["ce"] += ce
            totals["kd"] += kd
        red = self.dist.all_reduce_sum(torch.tensor([totals["loss"], totals["ce"], totals["kd"]], dtype=torch.float64))
        return {"loss": float(red[0]), "ce": float(red[1]), "kd": float(red[2]), "tokens": int(counts[2]),
                "on_policy": sum(int(s) for _, s in micro_batches)}

    # -------------------------------------------------------------- validation
    @torch.no_grad()
    def validation_ce(self) -> float | None:
        """Mean next-token CE of the student over the validation examples (all processes agree)."""
        if not self.val_examples:
            return None
        was = self.student.training
        self.student.eval()
        total = torch.zeros(2, dtype=torch.float64)
        mine = self.val_examples[self.dist.rank::self.dist.world]
        bs = max(1, self.cfg.micro_batch_size * 2)
        starts = list(range(0, len(mine), bs))
        forward = _StudentCore(self.student)
        if self.dist.kind == "fsdp":
            # sharded forwards are collective: every process runs the same number of batches (extra
            # ones repeat the first and are not counted), through the FSDP root module
            forward = self.core
            n_batches = -(-len(self.val_examples[::self.dist.world]) // bs)
            starts += [None] * (n_batches - len(starts))
        for start in starts:
            batch = collate(mine[start:start + bs] if start is not None else self.val_examples[:1],
                            self.tokenizer.pad_token_id)
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            targets = shifted_labels(batch["labels"]).to(self.device)
            hidden, weight = forward(ids, mask)
            if start is None:
                continue
            s = chunked_ce_sum(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                               self.cfg.loss_chunk_size)
            total += torch.tensor([float(s), float((targets != IGNORE_INDEX).sum())], dtype=torch.float64)
        self.student.train(was)
        total = self.dist.all_reduce_sum(total)
        return float(total[0] / total[1].clamp_min(1))

    # -------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, dist = self.cfg, self.dist
        t_start = time.perf_counter()
        ckpt_root = self.out / "checkpoints"
        metrics_path = self.out / "metrics.jsonl"
        start_step, best_val, best_step, tokens_total, last_loss = 0, None, None, 0, None
        latest = ckpt_io.latest_checkpoint(ckpt_root)
        if latest is not None:
            state = ckpt_io.load_checkpoint(latest, model=self.student, optimizer=self.optimizer,
                                            scheduler=self.scheduler, rank=dist.rank, world=dist.world)
            start_step, best_val, best_step = state["step"], state.get("best_val_ce"), state.get("best_step")
            tokens_total = state.get("tokens", 0)
            last_loss = state.get("train_loss")  # the last step's loss, for a resume after the last step
            if dist.rank == 0 and metrics_path.exists():
                keep = [ln for ln in metrics_path.read_text().splitlines()
                        if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
                write_text_atomic(metrics_path, "".join(ln + "\n" for ln in keep))
        elif dist.rank == 0 and metrics_path.exists():
            metrics_path.unlink()
        dist.barrier()

        log = open(metrics_path, "a", encoding="utf-8") if dist.rank == 0 else None
        bar = tqdm(total=self.total_steps, initial=start_step, disable=not (cfg.progress and dist.rank == 0),
                   desc=f"{cfg.mode}{'/' + cfg.objective if cfg.mode == 'kd' else ''}", dynamic_ncols=True)
        status = "complete"

        def write(row: dict) -> None:
            if log is not None:
                log.write(json.dumps(row) + "\n")
                log.flush()

        def save(step: int) -> None:
            state = {"best_val_ce": best_val, "best_step": best_step, "tokens": tokens_total,
                     "train_loss": last_loss,
                     "config": cfg.to_dict(), "total_steps": self.total_steps}
            ckpt_io.save_checkpoint(ckpt_root, step, model=self.student, optimizer=self.optimizer,
                                    scheduler=self.scheduler, state=state, rank=dist.rank, world=dist.world,
                                    barrier=dist.barrier, keep=cfg.keep_checkpoints)

        def evaluate(step: int) -> float | None:
            nonlocal best_val, best_step
            val = self.validation_ce()
            if val is None:
                return None
            write({"step": step, "val_ce": val})
            if best_val is None or val < best_val:
                best_val, best_step = val, step
                full = ckpt_io.full_model_state(self.student)  # FSDP2: gathered on every rank
                if dist.rank == 0:
                    ckpt_io.save_model_dir(self.out / "best", dist.unwrap(self.student), self.tokenizer,
                                           {"step": step, "val_ce": val}, state_dict=full)
            dist.barrier()
            return val

        try:
            step = start_step
            for step in range(start_step + 1, self.total_steps + 1):
                t0 = time.perf_counter()
                stats = self.compute_step(step)
                if not all(math.isfinite(stats[k]) for k in ("loss", "ce", "kd")):
                    raise KdlensError(
                        f"the loss became {stats['loss']} at step {step} (ce={stats['ce']}, kd={stats['kd']}); "
                        f"training stopped without applying that step. The last good checkpoint is kept in "
                        f"{ckpt_root} (resume=true continues from it); lower lr, temperature or noise_sigma, "
                        "or check the data.")
                grad_norm = (torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                             if cfg.max_grad_norm > 0 else
                             torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.trainable
                                                                   if p.grad is not None])))
                if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm is a replicated DTensor
                    grad_norm = grad_norm.full_tensor()
                if not torch.isfinite(grad_norm):
                    raise KdlensError(f"the gradient norm became {float(grad_norm)} at step {step}; training "
                                      f"stopped, the last good checkpoint is kept in {ckpt_root}")
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                tokens_total += stats["tokens"]
                dt = time.perf_counter() - t0
                last_loss = stats["loss"]
                if step % cfg.log_every == 0 or step == self.total_steps:
                    write({"step": step, "loss": stats["loss"], "ce": stats["ce"], "kd_loss": stats["kd"],
                           "lr": lr, "grad_norm": float(grad_norm), "tokens": stats["tokens"],
                           "tokens_per_s": stats["tokens"] / dt, "on_policy": stats["on_policy"],
                           "elapsed_s": time.perf_counter() - t_start})
                bar.set_postfix(loss=f"{stats['loss']:.4f}", kd=f"{stats['kd']:.4f}", lr=f"{lr:.2e}",
                                tok_s=f"{stats['tokens'] / dt:.0f}")
                bar.update(1)
                if cfg.eval_every and step % cfg.eval_every == 0 and step != self.total_steps:
                    evaluate(step)
                if cfg.save_every and step % cfg.save_every == 0 and step != self.total_steps:
                    save(step)
                if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps and step != self.total_steps:
                    if not (cfg.save_every and step % cfg.save_every == 0):
                        save(step)
                    status = "stopped"
                    break
            if status == "complete":
                if step > start_step or latest is None:
                    final_val = evaluate(self.total_steps)
                else:
                    final_val = self.validation_ce()
                save(self.total_steps)
                full = ckpt_io.full_model_state(self.student)
                if dist.rank == 0:
                    ckpt_io.save_model_dir(self.out / "final", dist.unwrap(self.student), self.tokenizer,
                                           {"step": self.total_steps, "val_ce": final_val}, state_dict=full)
                dist.barrier()
            else:
                final_val = None
        finally:
            bar.close()
            if log is not None:
                log.close()

        result = TrainResult(
            out_dir=str(self.out), status=status, steps=step, total_steps=self.total_steps,
            final_dir=str(self.out / "final") if status == "complete" else None,
            best_dir=str(self.out / "best") if best_step is not None else None,
            best_step=best_step, best_val_ce=best_val, final_val_ce=final_val, train_loss=last_loss,
            tokens=tokens_total, wall_s=time.perf_counter() - t_start,
            student_params=int(round(self.student_size_b * 1e9)), student_size_b=self.student_size_b,
            mode=cfg.mode, objective=cfg.objective if cfg.mode == "kd" else None,
            teacher_kind=cfg.teacher_kind if cfg.mode == "kd" else None, config=cfg.to_dict())
        if status == "complete" and dist.rank == 0:
            write_json_atomic(self.out / "result.json", result.to_dict())
        dist.barrier()
        return result


def _base_without_lora(peft_model):
    """A copy of a peft model's base weights without the LoRA layers (for saving the tiny base)."""
    import copy

    return copy.deepcopy(peft_model).unload()


class _StudentCore(torch.nn.Module):
    """Final hidden states [B, S, H] and the lm_head weight [V, H] of a causal LM (LoRA-aware).

    This module is what DDP wraps and torch.compile compiles: the loss needs hidden states and the
    output projection, never the full logits.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        from kdlens.models import hidden_states_and_head

        return hidden_states_and_head(self.model, input_ids, attention_mask)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------

def _check_run_dir(cfg: TrainConfig) -> TrainResult | None:
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


def train(cfg: TrainConfig | dict[str, Any]) -> TrainResult:
    """Run (or resume, or return the finished result of) the training run described by ``cfg``."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    done = _check_run_dir(cfg)
    if done is not None:
        return done
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()
