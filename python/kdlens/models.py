"""Loading causal LMs and their tokenizers (local folder or hub id), optionally with a LoRA adapter.

Every loader turns "cannot load" into a KdlensError that says what to do (point at a local folder
when offline). Training-specific helpers (LoRA set-up, vocabulary checks) live here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdlens.errors import KdlensError


def _load_error(what: str, name: str, exc: Exception) -> KdlensError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "") not in ("", "0")
    where = "a local folder" if Path(name).exists() else "the Hugging Face hub"
    hint = (
        " Hub access is off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE): pass a local folder made by "
        "save_pretrained (config.json, weights, tokenizer files) instead."
        if offline and not Path(name).exists() else ""
    )
    return KdlensError(f"could not load {what} {name!r} from {where}: {type(exc).__name__}: {exc}.{hint}")


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str = "left"):
    """Load a tokenizer; a pad token is set to EOS when the tokenizer has none."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise _load_error("the tokenizer", name, exc) from exc
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise KdlensError(f"tokenizer {name!r} has neither a pad nor an EOS token; add one")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    dtype=None,
    device=None,
    trainable: bool = False,
):
    """Load an AutoModelForCausalLM (and merge-free attach a peft adapter when given).

    ``trainable=False`` returns the model in eval mode with gradients off (a frozen teacher or a
    model to evaluate).
    """
    import torch
    from transformers import AutoModelForCausalLM

    name = str(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32)
    except Exception as exc:
        raise _load_error("the model", name, exc) from exc
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        except Exception as exc:
            raise _load_error("the LoRA adapter", str(adapter), exc) from exc
    if device is not None:
        model = model.to(device)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    return model
