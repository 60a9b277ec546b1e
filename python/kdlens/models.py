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


def _looks_like_path(name: str) -> bool:
    """A name that can only mean a local folder (a hub id is ``name`` or ``org/name``)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def check_model_folder(what: str, name: str, marker: tuple[str, ...]) -> None:
    """A local folder that is missing, or holds none of the ``marker`` files, is a clear error (not a
    hub lookup or a tokenizer-backend hint)."""
    path = Path(name).expanduser()
    if not path.exists():
        if _looks_like_path(name):
            raise KdlensError(f"{what} folder {name!r} does not exist; give a folder written by save_pretrained "
                              "(or a Hugging Face hub id such as org/name)")
        return
    if path.is_dir() and not any((path / m).is_file() for m in marker):
        raise KdlensError(f"{what} folder {name!r} holds no {' or '.join(marker)}; give a folder written by "
                          "save_pretrained")


def pick_device(spec: str | None, local_rank: int = 0, *, option: str = "device"):
    """``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N``, ... as a torch.device that exists on this
    machine; a KdlensError naming ``option`` otherwise (checked before any model is loaded)."""
    import torch

    if spec in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise KdlensError(f"{option}={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KdlensError(f"{option}={spec!r} but no CUDA device is available here; use {option}=cpu or auto")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= torch.cuda.device_count():
            raise KdlensError(f"{option}={spec!r} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


def load_tokenizer(name_or_path: str | os.PathLike, *, padding_side: str = "left"):
    """Load a tokenizer; a pad token is set to EOS when the tokenizer has none."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    check_model_folder("tokenizer", name, ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
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
    check_model_folder("model", name, ("config.json",))
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


# ---------------------------------------------------------------------------------------------
# Tiny Qwen2-style models for the offline synthetic task (a teacher and three student sizes)
# ---------------------------------------------------------------------------------------------

# name -> Qwen2Config fields; students s1 < s2 < s3 < teacher. Sizes with a 512-token vocabulary:
# see tiny_param_count (about 0.04M, 0.13M, 0.38M and 0.87M parameters).
TINY_CONFIGS: dict[str, dict] = {
    "tiny-teacher": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=384),
    "tiny-s3": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3,
                    num_key_value_heads=1, intermediate_size=288),
    "tiny-s2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=192),
    "tiny-s1": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=96),
}


def tiny_config(name: str, vocab_size: int = 512, *, eos_token_id: int = 0, pad_token_id: int = 1,
                max_position_embeddings: int = 512):
    """A ``Qwen2Config`` for one of :data:`TINY_CONFIGS` (tied embeddings, like Qwen2.5-0.5B..3B)."""
    from transformers import Qwen2Config

    if name not in TINY_CONFIGS:
        raise KdlensError(f"unknown tiny model {name!r}; known: {', '.join(TINY_CONFIGS)}")
    return Qwen2Config(
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        rope_theta=10000.0,
        **TINY_CONFIGS[name],
    )


def tiny_param_count(name: str, vocab_size: int = 512) -> int:
    """Parameters of a tiny model (computed from its config; tied embeddings counted once)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(tiny_config(name, vocab_size))
    return sum(p.numel() for p in model.parameters())


def size_in_billions(model) -> float:
    """A model's parameter count in billions (the unit the study's H3 uses for student size)."""
    seen, total = set(), 0
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for p in base.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total / 1e9


def make_tiny_model(name: str, tokenizer=None, *, vocab_size: int | None = None, seed: int = 0):
    """A randomly initialised tiny Qwen2 causal LM (seeded), sized to ``tokenizer``'s vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is not None:
        vocab_size = len(tokenizer)
        ids = dict(eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                   else tokenizer.eos_token_id)
    else:
        ids = {}
    config = tiny_config(name, vocab_size or 512, **ids)
    with torch.random.fork_rng(devices=[]):  # seed the CPU stream without disturbing the caller's
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model


# ---------------------------------------------------------------------------------------------
# Training helpers: student construction (LoRA), vocabulary checks, hidden states + lm_head
# ---------------------------------------------------------------------------------------------

def add_lora(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             targets=("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")):
    """Wrap ``model`` in a peft LoRA model (the paper's r=8, alpha=16, dropout 0.05 on q,k,v,up,down);
    the base weights and the lm_head stay frozen."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise KdlensError(f"LoRA target module(s) {', '.join(missing)} do not exist in this model; "
                          f"set lora_targets to names it has (e.g. {', '.join(sorted(names & set(targets)) or ['q_proj'])})")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def build_student(cfg, tokenizer):
    """The trainable student of a TrainConfig: ``tiny:<name>`` (random init seeded by cfg.seed) or a
    folder/hub id, with LoRA when ``cfg.lora``; full fine-tuning otherwise."""
    import torch

    dtype = getattr(torch, cfg.dtype)
    if cfg.student.startswith("tiny:"):
        model = make_tiny_model(cfg.student[5:], tokenizer, seed=cfg.seed).to(dtype)
    else:
        model = load_causal_lm(cfg.student, dtype=dtype, trainable=True)
    model.requires_grad_(True)
    model.train()
    check_tokenizer_fits(tokenizer, model, "student")
    if cfg.lora:
        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         targets=cfg.lora_targets)
    return model


def check_tokenizer_fits(tokenizer, model, role: str) -> None:
    width = model.get_output_embeddings().weight.shape[0]
    if len(tokenizer) > width:
        raise KdlensError(f"the tokenizer has {len(tokenizer)} tokens but the {role}'s output layer only "
                          f"{width}; use the tokenizer the {role} was trained with")


def align_vocabularies(tokenizer, student, teacher, teacher_tokenizer=None) -> int:
    """Check that teacher and student share the vocabulary; return the shared logit width.

    The tokenizers must map every token to the same id (the paper's code asserts equal vocabularies);
    logit widths may differ (Qwen2.5: 151936 vs 152064) and are cut to the shared prefix by the loss.
    """
    if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        a, b = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
        diff = sorted(set(a.items()) ^ set(b.items()))[:3]
        raise KdlensError(
            f"teacher and student tokenizers differ ({len(b)} vs {len(a)} tokens; e.g. {diff}); KD needs a "
            "shared vocabulary: pick a teacher from the student's model family")
    check_tokenizer_fits(tokenizer, student, "student")
    check_tokenizer_fits(tokenizer, teacher, "teacher")
    s_width = student.get_output_embeddings().weight.shape[0]
    t_width = teacher.get_output_embeddings().weight.shape[0]
    return min(s_width, t_width)


def hidden_states_and_head(model, input_ids, attention_mask):
    """Final (normed) hidden states [B, S, H] of a causal LM and its lm_head weight [V, H].

    Works for plain transformers models and peft-wrapped ones (LoRA layers live inside the decoder,
    the lm_head is not adapted). Full logits are never computed.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise KdlensError("models whose lm_head has a bias are not supported by the fused KD path")
    return out.last_hidden_state, head.weight
