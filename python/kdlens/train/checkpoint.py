"""Atomic training checkpoints: trainable weights (safetensors), optimizer, scheduler, RNG states, step.

A checkpoint is a folder ``checkpoints/step-<k>/`` holding ``trainable.safetensors`` (the parameters
that train: LoRA adapter weights or all weights), ``optimizer.pt``, ``scheduler.pt``,
``rng-rank<r>.pt`` (Python, NumPy, torch CPU and CUDA generator states of every process) and
``state.json`` (step, best validation CE, the resolved config), written last. The ``.pt`` files hold
only tensors, numbers, strings and containers of them, and are read with ``torch.load(...,
weights_only=True)``: a checkpoint folder from someone else cannot run code when it is resumed.
The folder is built under a temporary name and renamed into place, so a killed run never leaves a
half checkpoint under a final name; :func:`latest_checkpoint` only returns folders with a ``state.json``.

Under FSDP2 (parameters are DTensor shards) the same files hold the gathered full tensors: weights by
name, and the optimizer state from ``torch.distributed.checkpoint.state_dict`` (keyed by parameter
name); resuming re-shards both with ``set_model_state_dict`` / ``set_optimizer_state_dict``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from kdlens.errors import KdlensError
from kdlens.io import write_json_atomic

STEP_DIR = re.compile(r"^step-(\d+)$")


def is_sharded(model) -> bool:
    """True when the model's parameters are FSDP2 DTensor shards."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, unsharded (under FSDP2 this gathers: call it on every rank)."""
    return {name: (p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach())
            for name, p in model.named_parameters() if p.requires_grad}


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def rng_state() -> dict:
    """The generator states, as tensors, numbers and tuples only (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move folder ``tmp`` to ``final``; an existing ``final`` is swapped out first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(ckpt_root: Path, step: int, *, model, optimizer, scheduler, state: dict, rank: int,
                    world: int, barrier, keep: int) -> Path | None:
    """Write checkpoint ``step`` (all ranks call this; rank 0 writes the shared files)."""
    from safetensors.torch import save_file

    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".step-{step}.tmp"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    sharded = is_sharded(model)
    weights = trainable_state(model) if sharded or rank == 0 else None  # gathering is collective
    if sharded:  # FSDP2: the full optimizer state keyed by parameter name (collective, lands on rank 0)
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optim_state = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    else:
        optim_state = optimizer.state_dict() if rank == 0 else None
    if rank == 0:
        save_file({k: v.contiguous().cpu().clone() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier()
    if rank == 0:
        write_json_atomic(tmp / "state.json", {**state, "step": step, "world_size": world})
        _replace_dir(tmp, final)
        steps = sorted(int(m.group(1)) for p in ckpt_root.iterdir() if (m := STEP_DIR.match(p.name)))
        for old in steps[:-keep]:
            shutil.rmtree(ckpt_root / f"step-{old}", ignore_errors=True)
    barrier()
    return final


def remove_partial(run_dir: Path) -> None:
    """Remove the temporary folders a killed run left: ``checkpoints/.step-<k>.tmp`` and the staging
    and swapped-out copies of ``best/`` and ``final/`` (``.best.tmp``, ``.best.old``, ...)."""
    ckpt_root = run_dir / "checkpoints"
    stale = list(ckpt_root.glob(".step-*.tmp")) if ckpt_root.is_dir() else []
    stale += [run_dir / f".{name}.{kind}" for name in ("best", "final") for kind in ("tmp", "old")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    if not ckpt_root.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in ckpt_root.iterdir()
            if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return max(done)[1] if done else None


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def _load_states(path: Path):
    """``torch.load`` without executing code: tensors, numbers, strings and containers only."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise KdlensError(
            f"{path} holds objects other than tensors, numbers and strings, so kdlens refuses to load it "
            "(loading it could run code). Resume only checkpoints written by kdlens, or start the run again "
            f"in a new out_dir ({str(exc).splitlines()[0][:200]})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise KdlensError(f"{path} could not be read ({exc}); the checkpoint is damaged. Delete "
                          f"{path.parent} to resume from the checkpoint before it") from exc


def load_checkpoint(ckpt: Path, *, model, optimizer, scheduler, rank: int, world: int) -> dict:
    """Restore weights, optimizer, scheduler and this rank's RNG states; returns state.json's dict."""
    from safetensors.torch import load_file

    state = read_state(ckpt)
    if state.get("world_size", 1) != world:
        raise KdlensError(
            f"{ckpt} was written by {state.get('world_size')} process(es) but this run has {world}; "
            "resume with the same number of processes (the data order and RNG streams depend on it)")
    weights = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise KdlensError(f"{ckpt}: checkpoint weights {missing[:3]} do not exist in the model; "
                          "was it written for a different model or LoRA setting?")
    optim_state = _load_states(ckpt / "optimizer.pt")
    if is_sharded(model):  # FSDP2: every rank reads the full state and keeps its shards
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, weights, options=_full_options(strict=False))
        set_optimizer_state_dict(model, optimizer, optim_state, options=_full_options())
    else:
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(v)
        optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(_load_states(ckpt / "scheduler.pt"))
    set_rng_state(_load_states(ckpt / f"rng-rank{rank}.pt"))
    return state


def full_model_state(model) -> dict | None:
    """Under FSDP2, the model's full state dict (collective: call on every rank; rank 0 gets the tensors,
    on the CPU); None for an unsharded model (save_pretrained then reads the model itself)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    # tied parameters (lm_head = embeddings) come back as separate tensors under each name: keep the
    # first name only, as save_pretrained does for an unsharded model
    unique = {n for n, _ in model.named_parameters()}
    aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
    return {k: v for k, v in full.items() if k not in aliases}


def save_model_dir(path: Path, model, tokenizer, info: dict, state_dict: dict | None = None) -> None:
    """save_pretrained the model (or LoRA adapter) and tokenizer into ``path``, atomically
    (``state_dict``: the gathered weights of a sharded model, from :func:`full_model_state`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if state_dict is not None:
        model.save_pretrained(str(tmp), state_dict=state_dict)
    else:
        model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_json_atomic(tmp / "kdlens.json", info)
    _replace_dir(tmp, path)
