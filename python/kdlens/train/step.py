"""One optimizer step: the loss pieces (chunked cross-entropy, the KD term), the micro-batch loss,
the step over all micro-batches and processes, and the validation cross-entropy.

Loss of one optimizer step (``loss_normalization="global_tokens"``)::

    (1 - w) * sum CE_tokens / N_ce  +  w * sum KD_positions / N_kd

with N_ce the shifted labels that are not ignored and N_kd the attention-mask positions, both
counted over every micro-batch of the step on every process (:func:`step_token_counts`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from kdlens.data.collate import IGNORE_INDEX, collate, shifted_labels
from kdlens.train.config import TrainConfig

# Stream tags: each random stream of a run is seeded from (seed, ..., its tag), so the streams never
# share a seed: the epoch order, the on-policy coin and the teacher-noise seed.
EPOCH_ORDER = 17
ON_POLICY = 101
NOISE = 7


def mix_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from non-negative integers (numpy's SeedSequence hash of them)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]
    return int(state % np.uint64(2**31 - 1))


def step_token_counts(micro_batches: list[dict]) -> tuple[int, int]:
    """(N_ce, N_kd) of a step's collated micro-batches on this process: the next-token targets
    that count (labels[:, 1:] != IGNORE_INDEX) and the positions the KD term sums over (attention
    mask); N_kd is also the step's token count in the logs."""
    n_ce = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    n_kd = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    return n_ce, n_kd


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
            normalizer, noise_seed: int, noise_row_offset: int = 0, return_stats: bool = False):
    """The KD part of the loss via kdlens.losses (hidden-state form; ``logits`` = naive full logits).

    ``s_hidden``/``t_hidden`` are [B, S, H]; ``attention_mask`` [B, S] masks padding (paper: KD is
    masked only by the attention mask). ``return_stats``: also the loss's
    :class:`~kdlens.losses.stats.TokenStats` (argmax agreement, entropies) as ``(loss, stats)``.
    """
    common = dict(objective=cfg.objective, temperature=cfg.temperature, scale_by_t2=cfg.scale_by_t2,
                  beta=cfg.beta, alpha=cfg.skew_alpha, noise_sigma=cfg.noise_sigma, noise_seed=noise_seed,
                  reduction=reduction, normalizer=normalizer)
    if cfg.loss_implementation == "logits":
        from kdlens.losses.reference import reference_dense_token_stats, reference_kd_loss

        opts = _options(cfg, noise_seed, noise_row_offset, reduction)
        s_logits = (s_hidden @ s_weight.t()).float()
        t_logits = (t_hidden @ t_weight.t()).float()
        loss = reference_kd_loss(s_logits, t_logits, opts, attention_mask=attention_mask, normalizer=normalizer)
        if not return_stats:
            return loss
        return loss, reference_dense_token_stats(s_logits.detach(), t_logits, opts, attention_mask=attention_mask)
    from kdlens.losses import kd_loss

    # bf16 training: the lm_head GEMMs take bf16 operands (fp32 master weights would otherwise run plain
    # fp32 GEMMs, ~10x slower on a GPU); products accumulate in fp32 and dW stays fp32
    compute_dtype = torch.bfloat16 if uses_bf16(cfg, s_hidden.device) else None
    return kd_loss(student_hidden=s_hidden, student_weight=s_weight, teacher_hidden=t_hidden,
                   teacher_weight=t_weight, attention_mask=attention_mask,
                   implementation=cfg.loss_implementation, noise_row_offset=noise_row_offset,
                   compile=cfg.compile, compute_dtype=compute_dtype, return_stats=return_stats, **common)


def cached_kd_term(cfg: TrainConfig, s_hidden, s_weight, cached: tuple, cache, attention_mask, *, reduction: str,
                   normalizer, noise_seed: int, noise_row_offset: int = 0):
    """(loss, TokenStats) of the KD part from a teacher cache, no teacher GEMM. ``cached`` is what
    :func:`cache_batch` read for the micro-batch: from a full-vocabulary cache (k = V) the teacher's
    dense logits, trained with the dense loss (the same loss as a live teacher, which a sparse loss
    over all V "top-k" entries computes 2-3x slower); otherwise (ids [B, S, k], top-k logits [B, S, k],
    lse [B, S, n_T]) and the sparse loss of kdlens.losses with ``cfg.cache_tail``."""
    from kdlens.losses import kd_loss, sparse_kd_loss
    from kdlens.losses.dispatch import _round_to

    common = dict(objective=cfg.objective, temperature=cfg.temperature, scale_by_t2=cfg.scale_by_t2,
                  beta=cfg.beta, noise_sigma=cfg.noise_sigma, noise_seed=noise_seed,
                  noise_row_offset=noise_row_offset, reduction=reduction, normalizer=normalizer,
                  attention_mask=attention_mask, return_stats=True)
    naive = cfg.loss_implementation == "logits"  # naive: full student logits into the reference
    compute_dtype = None if naive or not uses_bf16(cfg, s_hidden.device) else torch.bfloat16
    if cache.full_vocabulary:
        (t_logits,) = cached
        # the batch already holds the teacher's N x V logits, so the student's add no new order of memory;
        # bf16 training rounds the GEMM operands as the hidden form does, and keeps the products in fp32
        s_logits = _round_to(s_hidden, compute_dtype).float() @ _round_to(s_weight, compute_dtype).float().t()
        return kd_loss(s_logits, t_logits, implementation="reference" if naive else cfg.loss_implementation,
                       compile=cfg.compile, **common)
    ids, logits, lse = cached
    common.update(tail=cfg.cache_tail, teacher_temperatures=cache.temperatures, teacher_vocab_size=cache.vocab_size)
    if naive:
        return sparse_kd_loss((s_hidden @ s_weight.t()).float(), teacher_ids=ids, teacher_topk_logits=logits,
                              teacher_lse=lse, implementation="reference", **common)
    return sparse_kd_loss(student_hidden=s_hidden, student_weight=s_weight, teacher_ids=ids,
                          teacher_topk_logits=logits, teacher_lse=lse, implementation=cfg.loss_implementation,
                          compile=cfg.compile, compute_dtype=compute_dtype, **common)


def cache_batch(cache, examples, length: int) -> tuple:
    """The teacher cache's tensors for one micro-batch, as :func:`cached_kd_term` reads them."""
    if cache.full_vocabulary:
        return (cache.dense_logits(examples, length),)
    return cache.lookup(examples, length)


def _options(cfg: TrainConfig, noise_seed: int, noise_row_offset: int, reduction: str):
    from kdlens.losses.options import KDOptions

    return KDOptions(objective=cfg.objective, temperature=cfg.temperature, scale_by_t2=cfg.scale_by_t2,
                     beta=cfg.beta, alpha=cfg.skew_alpha, noise_sigma=cfg.noise_sigma,
                     noise_seed=noise_seed, noise_row_offset=noise_row_offset, reduction=reduction)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast (and bf16 KD GEMM operands): ``bf16=on``, or ``auto`` on CUDA."""
    return cfg.bf16 == "on" or (cfg.bf16 == "auto" and device.type == "cuda")


class StudentCore(torch.nn.Module):
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


class StepLoss:
    """The step's loss and gradients (a part of :class:`~kdlens.train.loop.Trainer`; needs ``cfg``,
    ``dist``, ``device``, ``autocast``, ``core``/``core_fn``, ``teacher_fn``, ``student``,
    ``tokenizer``, ``train_examples``, ``val_examples`` and the on-policy sampler)."""

    def _micro_loss(self, batch: dict, n_ce: torch.Tensor, n_kd: torch.Tensor, step: int, micro: int,
                    n_micro: int):
        """Loss of one micro-batch, already divided by the step's normaliser (so the sum over micro-
        batches and processes is the step loss). Returns (loss to backward, ce part, kd part, the KD
        loss's TokenStats or None)."""
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
        stats = None
        paper = cfg.loss_normalization == "paper"
        if w < 1.0:
            ce_sum = chunked_ce_sum(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                    cfg.loss_chunk_size)
            if paper:
                ce = ce_sum / (targets != IGNORE_INDEX).sum().clamp_min(1) / n_micro
            else:
                ce = ce_sum / n_ce.clamp_min(1) * world
        if w > 0.0:
            cache = getattr(self, "teacher_cache", None)
            if cache is not None:
                cached = tuple(t.to(self.device) for t in batch["teacher_cache"])

                def term(**kw):
                    return cached_kd_term(cfg, hidden, weight, cached, cache, mask, **kw)
            else:
                with torch.no_grad(), amp:
                    t_hidden, t_weight = self.teacher_fn(ids, mask)

                def term(**kw):
                    return kd_term(cfg, hidden, weight, t_hidden, t_weight, mask, return_stats=True, **kw)
            seed = mix_seed(cfg.seed, step, micro, self.dist.rank, NOISE)
            if paper:
                if cfg.objective == "jsd":
                    n_lab = ((batch["labels"] != IGNORE_INDEX)).sum().to(self.device)
                    kd, stats = term(reduction="normalizer", normalizer=n_lab, noise_seed=seed)
                else:
                    kd, stats = term(reduction="paper_sequence_mean", normalizer=None, noise_seed=seed)
                kd = kd / n_micro
            else:
                kd, stats = term(reduction="normalizer", normalizer=n_kd.float() / world, noise_seed=seed)
        loss = (1.0 - w) * ce + w * kd
        return loss, float(ce.detach()) / world, float(kd.detach()) / world, stats

    def compute_step(self, step: int) -> dict[str, float]:
        """Forward and backward every micro-batch of ``step`` on this process (gradients accumulate
        into ``.grad``); returns the step's loss terms summed over processes and, for KD, the token-level
        agreement and the mean teacher and student entropies over the step's valid tokens."""
        cfg = self.cfg
        cache = getattr(self, "teacher_cache", None)
        micro_batches = []
        for j, idx in enumerate(self.rank_micro_batches(step)):
            examples, sampled = self._maybe_on_policy([self.train_examples[i] for i in idx], step, j)
            batch = collate(examples, self.tokenizer.pad_token_id, pad_to_multiple_of=cfg.pad_to_multiple_of)
            if cache is not None and cfg.mode == "kd":
                batch["teacher_cache"] = cache_batch(cache, examples, batch["input_ids"].shape[1])
            micro_batches.append((batch, sampled))
        n_ce, n_kd = step_token_counts([b for b, _ in micro_batches])
        tokens = n_kd
        counts = self.dist.all_reduce_sum(torch.tensor([n_ce, n_kd, tokens], dtype=torch.float64))
        n_ce_t = counts[0].to(self.device)
        n_kd_t = counts[1].to(self.device)
        totals = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
        token_stats = None
        for j, (batch, _) in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else self.dist.no_sync(self.core)
            with sync:
                loss, ce, kd, stats = self._micro_loss(batch, n_ce_t, n_kd_t, step, j, len(micro_batches))
                loss.backward()
            totals["loss"] += float(loss.detach()) / self.dist.world
            totals["ce"] += ce
            totals["kd"] += kd
            if stats is not None:
                token_stats = stats if token_stats is None else token_stats + stats
        red = self.dist.all_reduce_sum(torch.tensor([totals["loss"], totals["ce"], totals["kd"]], dtype=torch.float64))
        out = {"loss": float(red[0]), "ce": float(red[1]), "kd": float(red[2]), "tokens": int(counts[2]),
               "on_policy": sum(int(s) for _, s in micro_batches)}
        if cfg.mode == "kd":  # every process has KD micro-batches: the sums are reduced collectively
            sums = torch.zeros(4, dtype=torch.float64)
            if token_stats is not None:
                sums = torch.stack([t.detach().double().cpu() for t in (
                    token_stats.valid_tokens, token_stats.agree_tokens, token_stats.teacher_entropy_sum,
                    token_stats.student_entropy_sum)])
            sums = self.dist.all_reduce_sum(sums)
            valid = max(float(sums[0]), 1.0)
            out.update(token_agreement=float(sums[1]) / valid, teacher_entropy=float(sums[2]) / valid,
                       student_entropy=float(sums[3]) / valid)
        return out

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
        forward = StudentCore(self.student)
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
