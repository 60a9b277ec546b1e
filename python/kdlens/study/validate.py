"""Check a whole study config before anything runs, so ``kdlens study --dry-run`` catches a typo in
any section (``[train]``, ``[sft]``, ``[kd]``, ``[evaluate]``, ...) instead of the unit that first
reads it, hours into the study.

The stage sections are checked by the stages' own config types: every training section through a
:class:`kdlens.train.TrainConfig` built the way the study's units build it (with stand-ins for the
paths the study fills in), ``[evaluate]`` through :func:`evaluate_settings`, which is also what the
eval units use; task names through the task registry; model names that cannot exist (an unknown
``tiny-*`` name, a missing local folder) are reported too.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from kdlens.errors import KdlensError

# Keys of [evaluate] besides the Decoding fields it passes through.
EVALUATE_EXTRA = ("seed", "seeds", "limit", "dtype", "template", "response_cut")
DECODING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "batch_size")
EVAL_DTYPES = ("float32", "bfloat16", "float16")

# Stand-ins for what the study fills in when it builds a unit's TrainConfig.
_FILLED_IN = {"out_dir": "<unit folder>", "data": "<task data>", "student": "<student>"}


def evaluate_settings(section: dict, where: str = "[evaluate]") -> dict[str, Any]:
    """``[evaluate]`` checked and resolved: {"decoding": Decoding, "limit": int | None, "dtype": str | None,
    "template": str | None, "response_cut": str}."""
    from kdlens.config import _coerce
    from kdlens.eval.decode import Decoding

    opts = dict(section)
    known = DECODING_KEYS + EVALUATE_EXTRA
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise KdlensError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    hints = typing.get_type_hints(Decoding)
    kwargs = {k: _coerce(f"evaluate.{k}", opts[k], hints[k]) for k in DECODING_KEYS if k in opts}
    seeds = opts.get("seeds", (opts.get("seed", 6),))
    seeds = _coerce("evaluate.seeds", list(seeds) if isinstance(seeds, (list, tuple)) else seeds, tuple[int, ...])
    limit = _coerce("evaluate.limit", opts.get("limit"), int | None)
    if limit is not None and limit < 1:
        raise KdlensError(f"{where}: config key 'evaluate.limit' must be >= 1 (or absent for every item), got {limit}")
    dtype = _coerce("evaluate.dtype", opts.get("dtype"), str | None)
    if dtype is not None and dtype not in EVAL_DTYPES:
        raise KdlensError(f"{where}: config key 'evaluate.dtype' = {dtype!r} is not one of {', '.join(EVAL_DTYPES)}")
    try:
        decoding = Decoding(seeds=seeds, **kwargs)
        # prompt template (None: the one [train] uses) and response cut (kdlens.data.prompts)
        from kdlens.data.prompts import get_response_cut, get_template

        template = _coerce("evaluate.template", opts.get("template"), str | None)
        if template is not None:
            get_template(template)
        response_cut = _coerce("evaluate.response_cut", opts.get("response_cut", "instruction"), str)
        get_response_cut(response_cut)
    except KdlensError as exc:
        raise KdlensError(f"{where}: {exc}") from exc
    return {"decoding": decoding, "limit": limit, "dtype": dtype, "template": template,
            "response_cut": response_cut}


def _train_section(cfg, name: str) -> dict:
    value = getattr(cfg, name, None)
    return dict(value) if isinstance(value, dict) else {}


def _check_train(settings: dict, origin: str) -> None:
    from kdlens.train.config import TrainConfig

    try:
        TrainConfig.from_dict({**settings, **_FILLED_IN}, origin=origin)
    except KdlensError as exc:
        message = str(exc)
        raise KdlensError(message if message.startswith(origin) else f"{origin}: {message}") from None


def check_training_sections(cfg, where: str) -> None:
    """Every training unit's TrainConfig, built as the units build it, must be valid."""
    train = _train_section(cfg, "train")
    sft = {**train, **_train_section(cfg, "sft"), "mode": "sft"}
    for seed in cfg.grid.seeds:
        _check_train({**sft, "seed": seed}, f"{where} [train]+[sft]")
    if hasattr(cfg, "teacher_sft"):
        _check_train({**sft, **_train_section(cfg, "teacher_sft"), "mode": "sft"},
                     f"{where} [train]+[sft]+[teacher_sft]")
    pretrain = _train_section(cfg, "pretrain")
    if pretrain.get("max_steps"):  # max_steps = 0 (or absent): random bases, nothing is trained
        _check_train({"mode": "sft", "lora": False, **pretrain}, f"{where} [pretrain]")
    teacher_pretrain = {**pretrain, **_train_section(cfg, "teacher_pretrain")}
    if teacher_pretrain.get("max_steps"):
        _check_train({"mode": "sft", "lora": False, **teacher_pretrain}, f"{where} [pretrain]+[teacher_pretrain]")
    kd = {**train, **_train_section(cfg, "kd"), "mode": "kd", "teacher": "<teacher>"}
    grid = cfg.grid
    runs = [(o, 1.0, 0.0) for o in grid.objectives]
    runs += [(grid.objectives[0], t, 0.0) for t in grid.temperatures]
    runs += [(grid.objectives[0], 1.0, s) for s in grid.noise_sigmas]
    for objective, temperature, sigma in runs:
        settings = {**kd, "objective": objective, "temperature": temperature, "noise_sigma": sigma}
        if objective == "jsd":
            settings.setdefault("onpolicy_lambda", 0.5)
        _check_train(settings, f"{where} [train]+[kd] ({objective}, T={temperature:g}, sigma={sigma:g})")


def check_models(cfg, where: str) -> None:
    """Model names that cannot load: an unknown tiny-* name, a missing or empty local folder."""
    from kdlens.models import TINY_CONFIGS, check_model_folder

    for name in dict.fromkeys(cfg.models.teachers + cfg.models.students):
        if name in TINY_CONFIGS:
            continue
        if name.startswith("tiny-"):
            raise KdlensError(f"{where}: models names {name!r}, which is not a tiny model; known tiny models: "
                              f"{', '.join(TINY_CONFIGS)} (or give a model folder or hub id)")
        try:
            check_model_folder("model", name, ("config.json",))
        except KdlensError as exc:
            raise KdlensError(f"{where} [models]: {exc}") from None


# [teacher_cache] keys the study sets itself: the unit folder, the task data, the teacher and the KD runs'
# encoding, temperatures and weight dtype
_CACHE_FILLED_IN = ("out_dir", "data", "teacher", "teacher_adapter", "tokenizer", "temperatures", "template",
                    "max_length", "add_special_tokens", "dtype")


def check_teacher_cache(cfg, where: str) -> None:
    """The [teacher_cache] section holds TeacherCacheConfig keys the study does not set itself."""
    section = getattr(cfg, "teacher_cache", None) or {}
    if not section:
        return
    from kdlens.train.teacher_cache import TeacherCacheConfig

    taken = sorted(set(section) & set(_CACHE_FILLED_IN))
    if taken:
        raise KdlensError(f"{where} [teacher_cache]: {', '.join(taken)} are set by the study (from the task, the "
                          "teacher and [train]/[kd]); remove them")
    try:
        TeacherCacheConfig.from_dict({**section, "out_dir": "<unit folder>", "data": "<task data>",
                                      "teacher": "<teacher>"}, origin=f"{where} [teacher_cache]")
    except KdlensError as exc:
        message = str(exc)
        raise KdlensError(message if message.startswith(where) else f"{where} [teacher_cache]: {message}") from None


def check_study(cfg, where: str = "study config") -> None:
    """Validate every section of a StudyConfig (see the module docstring); KdlensError naming the key."""
    from kdlens.eval.tasks import resolve_tasks

    check_models(cfg, where)
    try:
        resolve_tasks(list(cfg.task.eval_tasks))
    except KdlensError as exc:
        raise KdlensError(f"{where} [task] eval_tasks: {exc}") from exc
    check_training_sections(cfg, where)
    check_teacher_cache(cfg, where)
    evaluate_settings(getattr(cfg, "evaluate", {}) or {}, f"{where} [evaluate]")
    for f in dataclasses.fields(cfg):  # every pass-through section must be a table
        value = getattr(cfg, f.name)
        if f.type in ("dict", dict) and not isinstance(value, dict):
            raise KdlensError(f"{where}: [{f.name}] must be a table")
