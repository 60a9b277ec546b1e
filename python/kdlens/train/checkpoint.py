"""Atomic training checkpoints: trainable weights (safetensors), optimizer, scheduler, RNG states, step.

A checkpoint is a folder ``checkpoints/step-<k>/`` holding ``trainable.safetensors`` (the parameters
that train: LoRA adapter weights or all weights), ``optimizer.pt``, ``scheduler.pt``,
``rng-rank<r>.pt`` (Python, NumPy, torch CPU and CUDA generator states of every process) and
``state.json`` (step, best validation CE, the resolved config), written last. The folder is built
under a temporary name and renamed into place, so a killed run never leaves a half checkpoint under
a final name; :func:`latest_checkpoint` only returns folders with a ``state.json``.
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


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
    if rank == 0:
        weights = {k: v.contiguous().cpu().clone() for k, v in trainable_state(model).items()}
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
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


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    if not ckpt_root.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in ckpt_root.iterdir()
            if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return max(done)[1] if done else None


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


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
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(ckpt / f"rng-rank{rank}.pt", weights_only=False))
    return state


def save_model_dir(path: Path, model, tokenizer, info: dict) -> None:
    """save_pretrained the model (or LoRA adapter) and tokenizer into ``path``, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_json_atomic(tmp / "kdlens.json", info)
    _replace_dir(tmp, path)
