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

The jobs around the loop live next to it: data.py (records, split, encoding, step order),
onpolicy.py (GKD's sampler, on the evaluation decoder), step.py (loss pieces, micro-batch loss,
step, validation CE), run_dir.py (TrainResult, the resume check, the metrics log).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from kdlens.errors import KdlensError
from kdlens.io import write_json_atomic
from kdlens.train import checkpoint as ckpt_io
from kdlens.train.config import TrainConfig
from kdlens.train.data import StepOrder, load_split_encode
from kdlens.train.distributed import DistContext, setup_distributed
from kdlens.train.onpolicy import OnPolicySampler
from kdlens.train.run_dir import TrainResult, check_run_dir, truncate_metrics
from kdlens.train.step import StepLoss, StudentCore, uses_bf16

# per-step KD token statistics in metrics.jsonl: the fraction of valid tokens whose student argmax is the
# teacher's, and the mean teacher and student entropies (nats, at the KD temperature), from the loss itself
TOKEN_STAT_KEYS = ("token_agreement", "teacher_entropy", "student_entropy")

__all__ = ["TrainResult", "Trainer", "train"]


class Trainer(StepOrder, OnPolicySampler, StepLoss):
    """Holds models, data and optimizer of one run; :meth:`run` is the loop. The data order
    (:class:`~kdlens.train.data.StepOrder`), GKD's sampler
    (:class:`~kdlens.train.onpolicy.OnPolicySampler`) and the step's loss and gradients
    (:class:`~kdlens.train.step.StepLoss`) are its parts, one file each."""

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
        from kdlens.models import (align_vocabularies, build_student, load_causal_lm, load_tokenizer,
                                   size_in_billions)

        cfg = self.cfg
        tok_src = cfg.tokenizer or (None if cfg.student.startswith("tiny:") else cfg.student)
        if tok_src is None:
            raise KdlensError("student=tiny:<name> needs tokenizer=<folder> (e.g. the one write_task made)")
        self.tokenizer = load_tokenizer(tok_src, padding_side="left")
        self.template = get_template(cfg.template)
        self.train_records, self.train_examples, self.val_examples = load_split_encode(
            cfg, self.tokenizer, self.template)
        torch.manual_seed(cfg.seed)
        self.student = build_student(cfg, self.tokenizer).to(self.device)
        if cfg.student.startswith("tiny:") and cfg.lora and self.dist.rank == 0:
            # a LoRA adapter needs its base: keep the randomly initialised tiny model next to the run
            ckpt_io.save_model_dir(self.out / "base", _base_without_lora(self.student), self.tokenizer,
                                   {"tiny": cfg.student[5:], "seed": cfg.seed})
        self.student.train()
        self.student_size_b = size_in_billions(self.student)
        self.teacher = None
        self.teacher_cache = None
        if cfg.mode == "kd" and cfg.teacher_cache:  # the teacher's logits come from disk; no teacher model
            from kdlens.train.teacher_cache import TeacherCache, check_cache_matches

            self.teacher_cache = TeacherCache(cfg.teacher_cache)
            check_cache_matches(self.teacher_cache, data=cfg.data, tokenizer=self.tokenizer, template=cfg.template,
                                max_length=cfg.max_length, add_special_tokens=cfg.add_special_tokens,
                                temperature=cfg.temperature, teacher=cfg.teacher,
                                teacher_adapter=cfg.teacher_adapter)
            width = self.student.get_output_embeddings().weight.shape[0]
            if self.teacher_cache.vocab_size > width:
                raise KdlensError(
                    f"the teacher cache {cfg.teacher_cache} covers {self.teacher_cache.vocab_size} vocabulary "
                    f"entries but the student's output layer has {width}; build the cache with vocab_size={width}")
        elif cfg.mode == "kd":
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
        return StudentCore(self.student)

    def _compile(self) -> None:
        """The one place torch.compile is applied: the student forward (hidden states + lm_head, and
        its backward) and the frozen teacher's forward. Both are compiled with dynamic shapes, so the
        batch's sequence length (padded to ``pad_to_multiple_of``) does not trigger recompiles; the
        KD loss compiles its own element-wise step (kdlens.losses.chunked, row count dynamic)."""
        self.core_fn = self.core
        self.teacher_fn = StudentCore(self.teacher) if self.teacher is not None else None
        if self.cfg.compile:
            self.core_fn = torch.compile(self.core, dynamic=True)
            if self.teacher_fn is not None:
                self.teacher_fn = torch.compile(self.teacher_fn, dynamic=True)

    # -------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, dist = self.cfg, self.dist
        t_start = time.perf_counter()
        ckpt_root = self.out / "checkpoints"
        metrics_path = self.out / "metrics.jsonl"
        start_step, best_val, best_step, tokens_total, last_loss = 0, None, None, 0, None
        if dist.rank == 0:
            ckpt_io.remove_partial(self.out)  # what a killed run left half-written
        dist.barrier()
        latest = ckpt_io.latest_checkpoint(ckpt_root)
        if latest is not None:
            state = ckpt_io.load_checkpoint(latest, model=self.student, optimizer=self.optimizer,
                                            scheduler=self.scheduler, rank=dist.rank, world=dist.world)
            start_step, best_val, best_step = state["step"], state.get("best_val_ce"), state.get("best_step")
            tokens_total = state.get("tokens", 0)
            last_loss = state.get("train_loss")  # the last step's loss, for a resume after the last step
            if dist.rank == 0:
                truncate_metrics(metrics_path, start_step)
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
                           **{k: stats[k] for k in TOKEN_STAT_KEYS if k in stats},
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


def train(cfg: TrainConfig | dict[str, Any]) -> TrainResult:
    """Run (or resume, or return the finished result of) the training run described by ``cfg``."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    done = check_run_dir(cfg)
    if done is not None:
        return done
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()
