"""Frozen-dataclass configs: TOML loading, ``key=value`` overrides with type checks, ranges, dicts.

A stage declares its config as a frozen dataclass whose fields carry ``help`` (and optionally
``range=(lo, hi)`` or ``choices=(...)``) in their metadata, via :func:`option`. This module turns
TOML files, plain dicts and command-line overrides into such a config with clear KdlensErrors for
unknown keys, wrong types and out-of-range values. It imports no torch.

Tests: ``python -m pytest tests/train/test_config.py -q``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from kdlens.errors import KdlensError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(default=_MISSING, *, help: str, range: tuple | None = None, choices: Sequence | None = None,
           default_factory=_MISSING):
    """A dataclass field with help text and an optional inclusive numeric range or a set of choices."""
    meta = {"help": help, "range": range, "choices": tuple(choices) if choices is not None else None}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return False, tp


def _coerce(name: str, value: Any, tp) -> Any:
    """Check (and gently convert) ``value`` to the annotated type ``tp``."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise KdlensError(f"config key {name!r} must not be empty (None)")
    tp = inner
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise KdlensError(f"config key {name!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise KdlensError(f"config key {name!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:  # NaN passes every range check, so it is refused here
                raise KdlensError(f"config key {name!r} must be a number, got nan")
            return float(value)
        raise KdlensError(f"config key {name!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise KdlensError(f"config key {name!r} must be a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise KdlensError(f"config key {name!r} must be a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [v if item is Any else _coerce(f"{name}[]", v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise KdlensError(f"config key {name!r} must be a table, got {value!r}")
        return dict(value)
    return value


def validate(cfg) -> None:
    """Check every field of a config dataclass against its type, range and choices."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        coerced = _coerce(f.name, value, hints[f.name])
        if coerced is not value and coerced != value:
            object.__setattr__(cfg, f.name, coerced)
        value = coerced
        if value is None:
            continue
        rng = f.metadata.get("range")
        if rng is not None:
            lo, hi = rng
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise KdlensError(
                    f"config key {f.name!r} = {value!r} is out of range [{lo}, {hi}]: {f.metadata.get('help', '')}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise KdlensError(
                f"config key {f.name!r} = {value!r} is not one of {', '.join(map(str, choices))}")


def from_dict(cls: type[C], data: Mapping[str, Any], *, origin: str = "config") -> C:
    """Build a config from a mapping; unknown keys and wrong types are KdlensErrors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KdlensError(f"{origin}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
    hints = _hints(cls)
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING]
    if missing:
        raise KdlensError(f"{origin}: missing required key(s) {', '.join(missing)}")
    cfg = cls(**kwargs)
    validate(cfg)  # ranges and choices, also for config classes without a __post_init__ that validates
    return cfg


def to_dict(cfg) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a config (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML file into a dict (KdlensError when missing or malformed)."""
    p = Path(path)
    if not p.is_file():
        raise KdlensError(f"{p}: no such config file")
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise KdlensError(f"{p}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise KdlensError(f"{p}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); the value is read as TOML (``3``, ``1e-4``, ``true``, ``[1, 2]``)
    and falls back to a plain string (``student=models/s1``)."""
    if "=" not in text:
        raise KdlensError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise KdlensError(f"override {text!r} has an empty key")
    raw = raw.strip()
    if raw in ("none", "None", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def with_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = dict(data)
    for text in overrides:
        key, value = parse_override(text)
        out[key] = value
    return out


def load_config(cls: type[C], path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> C:
    """``base`` dict, then the TOML file at ``path``, then ``key=value`` overrides -> a config."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(load_toml(path))
    data = with_overrides(data, overrides)
    return from_dict(cls, data, origin=str(path) if path else "config")


def dumps_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
