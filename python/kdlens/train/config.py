"""The training configuration (:class:`TrainConfig`) and the paper's presets.

One frozen dataclass describes an SFT run (also how a task-aware teacher is made) or a KD run
(SeqKD = forward KL, RevKD = reverse KL, GKD = JSD with on-policy sampling, or any objective of
kdlens.losses). ``PRESETS`` holds the paper's hyper-parameters (paper.md sections 3-4); a preset is
a dict applied under the user's own keys (``TrainConfig.from_preset("seqkd", out_dir=...)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kdlens.config import from_dict, option, to_dict, validate
from kdlens.errors import KdlensError
from kdlens.objectives import OBJECTIVE_NAMES

LOSS_OBJECTIVES = OBJECTIVE_NAMES
CACHE_OBJECTIVES = ("forward_kl", "reverse_kl", "jsd")  # kdlens.losses.SPARSE_OBJECTIVES (no torch import here)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = option(help="run folder: checkpoints/, best/, final/, metrics.jsonl, result.json")
    data: str = option(help="training records: .json/.jsonl/.parquet file (LLM-Adapters fields) or a hub id")
    student: str = option(help="student model: local folder, hub id, or tiny:<name> (random init, see "
                               "kdlens.models.TINY_CONFIGS)")
    tokenizer: str | None = option(None, help="tokenizer folder or id (default: the student's)")
    mode: str = option("sft", help="sft (cross-entropy; also makes a task-aware teacher) or kd",
                       choices=("sft", "kd"))
    teacher: str | None = option(None, help="teacher model (kd): folder or hub id; a base model here is "
                                            "the paper's task-unaware teacher")
    teacher_adapter: str | None = option(None, help="LoRA adapter folder on top of `teacher` (a task-aware "
                                                    "teacher made by LoRA SFT)")
    teacher_cache: str | None = option(None, help="teacher-cache folder (kd; `kdlens teacher-cache`): train from the "
                                                  "cached top-k teacher logits; the teacher model is never loaded")
    cache_tail: str = option("rest", help="teacher-cache tail: rest (the uncached mass is one more bucket) or "
                                          "renormalize (the top-k only)", choices=("rest", "renormalize"))
    teacher_kind: str = option("task_aware", help="label recorded in result.json",
                               choices=("task_aware", "task_unaware"))
    objective: str = option("forward_kl", help="KD objective (SeqKD=forward_kl, RevKD=reverse_kl, GKD=jsd)",
                            choices=LOSS_OBJECTIVES)
    temperature: float = option(1.0, help="KD temperature T (the paper's GKD uses 1)", range=(1e-3, 100.0))
    scale_by_t2: bool = option(True, help="multiply the KD term by T^2 (paper: yes for SeqKD/RevKD)")
    beta: float = option(0.5, help="JSD beta (GKD)", range=(1e-6, 1 - 1e-6))
    skew_alpha: float = option(0.1, help="skew KL alpha", range=(1e-6, 1 - 1e-6))
    noise_sigma: float = option(0.0, help="std of Gaussian noise added to teacher logits (fresh each step)",
                                range=(0.0, 1e3))
    kd_weight: float = option(1.0, help="w in (1-w)*CE + w*KD (paper: 1)", range=(0.0, 1.0))
    onpolicy_lambda: float = option(0.0, help="probability per micro-batch of training on student samples "
                                              "instead of the data (paper GKD: 0.5)", range=(0.0, 1.0))
    loss_implementation: str = option("auto", help="kdlens.losses implementation, or 'logits' for the naive "
                                                   "full-logits path", choices=("auto", "reference", "chunked",
                                                                                "triton", "logits"))
    loss_normalization: str = option("global_tokens", help="global_tokens: sum over valid tokens / their count "
                                     "over the whole accumulated (and distributed) batch; paper: the paper's "
                                     "per-micro-batch reduction averaged over accumulation steps",
                                     choices=("global_tokens", "paper"))
    # data
    template: str = option("alpaca", help="prompt template name (kdlens.data.prompts): alpaca, or alpaca-paper "
                                          "(the paper's exact bytes)")
    add_special_tokens: bool = option(False, help="let the tokenizer add its special tokens (e.g. a BOS) to "
                                                  "training texts (paper: yes)")
    max_length: int = option(256, help="max tokens per example (truncated; EOS appended when shorter)", range=(8, 1 << 20))
    train_on_inputs: bool = option(True, help="labels cover the prompt too (paper: yes)")
    val_size: int = option(500, help="records held out for validation CE (0: none)", range=(0, None))
    max_train_records: int | None = option(None, help="use only the first N training records", range=(1, None))
    # model
    lora: bool = option(True, help="train a LoRA adapter (paper) instead of all weights")
    lora_r: int = option(8, help="LoRA rank", range=(1, 4096))
    lora_alpha: int = option(16, help="LoRA alpha", range=(1, 1 << 16))
    lora_dropout: float = option(0.05, help="LoRA dropout", range=(0.0, 1.0))
    lora_targets: tuple[str, ...] = option(LORA_TARGETS, help="module names LoRA adapts")
    dtype: str = option("float32", help="weight dtype of student and teacher", choices=("float32", "bfloat16",
                                                                                       "float16"))
    # optimisation
    epochs: float = option(4.0, help="passes over the training data (ignored when max_steps is set)",
                           range=(0.0, 1e6))
    max_steps: int | None = option(None, help="optimizer steps (overrides epochs)", range=(1, None))
    micro_batch_size: int = option(4, help="examples per forward pass per process", range=(1, 1 << 16))
    grad_accum: int = option(4, help="micro-batches per optimizer step per process", range=(1, 1 << 16))
    lr: float = option(3e-4, help="peak AdamW learning rate", range=(0.0, 10.0))
    warmup_steps: int = option(100, help="linear warm-up steps, then linear decay to 0", range=(0, None))
    weight_decay: float = option(0.0, help="AdamW weight decay", range=(0.0, 10.0))
    max_grad_norm: float = option(1.0, help="gradient clipping norm (0: off)", range=(0.0, None))
    seed: int = option(6, help="seed of data order, init, dropout, noise and sampling", range=(0, 2**31 - 1))
    # runtime
    compile: bool = option(False, help="torch.compile the student forward + loss step")
    bf16: str = option("auto", help="bf16 autocast and bf16 lm_head GEMMs in the KD loss: auto (on CUDA), on, off",
                       choices=("auto", "on", "off"))
    device: str = option("auto", help="auto, cpu, cuda, cuda:N")
    distributed: str = option("auto", help="auto (DDP under torchrun), ddp, fsdp, none",
                              choices=("auto", "ddp", "fsdp", "none"))
    eval_every: int = option(0, help="validate every N steps (0: only at the end)", range=(0, None))
    save_every: int = option(0, help="checkpoint every N steps (0: only at the end)", range=(0, None))
    keep_checkpoints: int = option(2, help="step checkpoints to keep", range=(1, None))
    log_every: int = option(1, help="write metrics every N steps", range=(1, None))
    progress: bool = option(True, help="show a progress bar")
    resume: bool = option(False, help="continue the run in out_dir from its last checkpoint")
    stop_after_steps: int | None = option(None, help="debug: stop (as if killed) after this step, after "
                                                     "checkpointing", range=(1, None))
    pad_to_multiple_of: int = option(8, help="pad batches to a multiple of this length (fewer recompiles)",
                                     range=(1, 4096))
    loss_chunk_size: int = option(1024, help="rows per chunk for the chunked CE", range=(1, None))

    def __post_init__(self):
        validate(self)
        if self.teacher_adapter and not self.teacher:
            raise KdlensError("teacher_adapter needs teacher (the base model it was trained on)")
        if self.mode == "kd" and not (self.teacher or self.teacher_cache):
            raise KdlensError("mode='kd' needs a teacher (teacher=<model folder or hub id>, or "
                              "teacher_cache=<folder from `kdlens teacher-cache`>)")
        if self.mode == "sft" and (self.teacher or self.teacher_adapter or self.teacher_cache):
            raise KdlensError("mode='sft' trains on the data alone; remove teacher/teacher_adapter/teacher_cache "
                              "or use mode='kd'")
        if self.teacher_cache and self.objective not in CACHE_OBJECTIVES:
            raise KdlensError(f"training from teacher_cache supports objective {', '.join(CACHE_OBJECTIVES)} (the "
                              f"sparse-teacher loss); got {self.objective!r}")
        if self.teacher_cache and self.onpolicy_lambda > 0:
            raise KdlensError("teacher_cache holds the teacher's logits on the training data only; on-policy "
                              "samples (onpolicy_lambda > 0) need a live teacher: set onpolicy_lambda=0 or "
                              "use teacher=<model>")
        if self.mode == "kd" and self.kd_weight == 0.0:
            raise KdlensError("mode='kd' with kd_weight=0 is SFT; use mode='sft'")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> "TrainConfig":
        return from_dict(cls, data, origin=origin)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise KdlensError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return from_dict(cls, {**PRESETS[preset], **overrides}, origin=f"preset {preset}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# Fields that may differ between a run and its resumption (they do not change the result).
RESUME_FREE_KEYS = frozenset({"resume", "stop_after_steps", "progress", "log_every", "device",
                              "eval_every", "save_every", "keep_checkpoints", "compile"})

_PAPER_COMMON: dict[str, Any] = dict(
    lora=True, lora_r=8, lora_alpha=16, lora_dropout=0.05, lr=3e-4, warmup_steps=100, weight_decay=0.0,
    micro_batch_size=4, grad_accum=4, max_length=256, seed=6, train_on_inputs=True, val_size=500,
    kd_weight=1.0, template="alpaca-paper", add_special_tokens=True,
)

# The paper's hyper-parameters (paper.md sections 3-4). Math uses 4 epochs, commonsense 3.
PRESETS: dict[str, dict[str, Any]] = {
    "sft": {**_PAPER_COMMON, "mode": "sft", "epochs": 4.0},
    "seqkd": {**_PAPER_COMMON, "mode": "kd", "objective": "forward_kl", "temperature": 2.0,
              "scale_by_t2": True, "loss_normalization": "paper", "epochs": 4.0},
    "revkd": {**_PAPER_COMMON, "mode": "kd", "objective": "reverse_kl", "temperature": 1.0,
              "scale_by_t2": True, "loss_normalization": "paper", "epochs": 4.0},
    "gkd": {**_PAPER_COMMON, "mode": "kd", "objective": "jsd", "beta": 0.5, "temperature": 1.0,
            "scale_by_t2": False, "onpolicy_lambda": 0.5, "loss_normalization": "paper", "epochs": 4.0},
}
