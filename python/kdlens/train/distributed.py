"""Process-group set-up for training: one process, DDP under torchrun, or FSDP2 for big models.

Under ``torchrun`` (WORLD_SIZE > 1) the default process group is created with NCCL on CUDA and gloo
on CPU. :class:`DistContext` hides the differences the loop cares about: wrapping the student's
forward module, ``no_sync`` during gradient accumulation, summing counters over processes, and
barriers. With ``distributed="fsdp"`` the student's decoder layers and the wrapper are sharded with
``torch.distributed.fsdp.fully_shard`` (FSDP2); gradient clipping and checkpoints then operate on
sharded parameters (DTensors): checkpoints and final/best folders hold gathered full tensors (see
kdlens.train.checkpoint), validation runs the same number of sharded forwards on every process, and
on-policy sampling (GKD's generate) is refused, since it would issue different collectives per process.
The teacher is not sharded (one full copy per process). Tested on CPU with gloo: 2 processes (DDP, and
FSDP2 stopped + resumed) equal 1 process (tests/train/test_distributed.py).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from kdlens.errors import KdlensError


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    kind: str  # "none", "ddp", "fsdp"

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        backend_device = self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        x = t.to(backend_device)
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
        return x.to(t.device)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DDP(module, device_ids=ids)
        if self.kind == "fsdp":
            from torch.distributed.fsdp import fully_shard

            inner = getattr(module, "model", module)
            base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
            layers = getattr(getattr(base, "model", base), "layers", None)
            if layers is None:
                raise KdlensError("FSDP needs a model with .model.layers (Llama/Qwen2-style decoder layers)")
            for layer in layers:
                fully_shard(layer)
            fully_shard(module)
            return module
        return module

    def no_sync(self, module):
        """Skip the gradient reduction of a micro-batch that is not the step's last one."""
        if self.kind == "ddp":
            return module.no_sync()
        if self.kind == "fsdp":
            return _fsdp_no_sync(module)
        return contextlib.nullcontext()

    def unwrap(self, model):
        return model

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def _fsdp_no_sync(module):
    """FSDP2's no_sync: unsharded gradients accumulate locally, the last micro-batch reduce-scatters."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _pick_device(spec: str, local_rank: int) -> torch.device:
    from kdlens.models import pick_device

    return pick_device(spec, local_rank)


def setup_distributed(cfg) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(cfg.device, local_rank)
    if world == 1:
        if cfg.distributed in ("ddp", "fsdp"):
            kind = "none"  # one process: nothing to synchronise
        else:
            kind = "none"
        return DistContext(0, 1, 0, device, kind)
    if cfg.distributed == "none":
        raise KdlensError("distributed='none' under torchrun with WORLD_SIZE > 1; use auto, ddp or fsdp")
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    kind = "fsdp" if cfg.distributed == "fsdp" else "ddp"
    return DistContext(rank, world, local_rank, device, kind)
