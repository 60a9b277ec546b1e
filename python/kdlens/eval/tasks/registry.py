"""The task registry: what a benchmark is (loader, prompt, answer rule, metric) and how to find one.

This is the ONE place that knows task names, display names, families, aliases and answer rules;
:mod:`kdlens.metrics.answers`, :mod:`kdlens.stats.schema` and the evaluation read them from here.
It imports no torch and no native code.

A :class:`Task` knows where its test records come from (a local file in its family's format, a
folder laid out like LLM-Adapters' ``dataset/`` or MiniLLM's ``data/``, or a hub dataset id when
online), which answer-extraction rule (:mod:`kdlens.eval.tasks.rules`) scores it (or ROUGE-L for
instruction following), and its size in the paper. Each family module (math, commonsense,
instruct, synthetic) registers its tasks with :func:`register`; adding a task is one entry there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from kdlens.errors import KdlensError
from kdlens.eval.tasks.rules import AnswerRule

FAMILIES = ("math", "commonsense", "instruct", "synthetic")
METRICS = ("accuracy", "rouge_l")
_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Example:
    """One test item: its id, the prompt fields and the gold answer (plus every reference)."""

    id: str
    instruction: str
    input: str
    gold: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """One benchmark.

    ``name``: canonical lowercase key. ``display``: its name in evaluation tables; ``short``: its
    column header in the paper's tables (defaults to ``display``).
    ``rule``: the answer-extraction rule (None for ROUGE-L tasks). ``folders``/``files``: where the
    test file lies under a data folder (first match wins, folder names compared case-insensitively).
    ``"."`` in ``folders`` means the data folder itself.
    ``read``: turns a source (file path or hub id) and options into records (dicts).
    ``to_example``: turns one record and its position into an :class:`Example`.
    """

    name: str
    family: str
    display: str
    metric: str
    read: Callable[..., list[dict]] = field(repr=False)
    to_example: Callable[[dict, int], Example] = field(repr=False)
    rule: AnswerRule | None = None
    short: str = ""
    paper_size: int | None = None
    folders: tuple[str, ...] = ()
    files: tuple[str, ...] = ("test.json",)
    aliases: tuple[str, ...] = ()
    hub_id: str | None = None
    needs_source: bool = True
    description: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}")
        if (self.rule is None) != (self.metric == "rouge_l"):
            raise ValueError(f"task {self.name!r}: accuracy tasks need an answer rule, ROUGE-L tasks none")
        if not self.short:
            object.__setattr__(self, "short", self.display)

    def find_in(self, data_dir: str | os.PathLike) -> Path | None:
        """The task's test file under ``data_dir`` (LLM-Adapters/MiniLLM layouts), or None."""
        root = Path(data_dir)
        if not root.is_dir():
            raise KdlensError(f"{root}: no such data folder")
        entries = {p.name.lower(): p for p in root.iterdir()}
        for folder in self.folders + (self.name,):
            sub = root if folder == "." else entries.get(folder.lower())
            if sub is not None and sub.is_dir():
                for rel in self.files:
                    if (sub / rel).is_file():
                        return sub / rel
        for stem in (self.name,) + self.folders:
            for suffix in _SUFFIXES:
                hit = entries.get(f"{stem}{suffix}".lower())
                if hit is not None and hit.is_file():
                    return hit
        return None

    def load(
        self,
        source: str | os.PathLike | None = None,
        *,
        data_dir: str | os.PathLike | None = None,
        limit: int | None = None,
        **options,
    ) -> list[Example]:
        """The task's test examples from ``source`` (a file or hub id) or from ``data_dir``."""
        if source is None and data_dir is not None:
            source = self.find_in(data_dir)
            if source is None and self.needs_source:
                where = ", ".join(f"{f}/{r}" for f in self.folders[:1] or (self.name,) for r in self.files[:1])
                raise KdlensError(
                    f"task {self.name}: no test file under {data_dir} (looked for {where} and "
                    f"{self.name}.json/.jsonl/.parquet); pass --data {self.name}=FILE instead"
                )
        if source is None:
            source = self.hub_id
        if source is None and self.needs_source:
            layout = f"{(self.folders or (self.name,))[0]}/{self.files[0]}"
            raise KdlensError(
                f"task {self.name}: no data given. Pass --data {self.name}=FILE (a .json list, .jsonl "
                f"or .parquet in the {self.family} format), or --data-dir DIR holding {layout}, or a "
                f"hub dataset id with --data {self.name}=OWNER/NAME when online."
            )
        records = self.read(source, **options)
        if limit is not None:
            records = records[:limit]
        examples = [self.to_example(r, i) for i, r in enumerate(records)]
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            raise KdlensError(f"task {self.name}: record ids are not unique in {source}")
        return examples


_REGISTRY: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def canonical_task(name: str) -> str:
    """The registered name of a task name or alias (``ARC-Easy`` -> ``arc_easy``, ``social_i_qa``
    -> ``siqa``, ``SVAMP`` -> ``svamp``); an unknown name comes back as its normalised key."""
    key = _norm(name)
    return _ALIASES.get(key, key)


def find_task(name: str) -> Task | None:
    """A task by name or alias, or None when the registry does not know it."""
    key = _ALIASES.get(_norm(name))
    return None if key is None else _REGISTRY[key]


def register(task: Task) -> Task:
    """Add a task to the registry (its name and aliases must be new)."""
    for key in (task.name,) + task.aliases:
        k = _norm(key)
        if k in _ALIASES and _ALIASES[k] != task.name:
            raise ValueError(f"task name {key!r} is already taken by {_ALIASES[k]!r}")
        _ALIASES[k] = task.name
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """A task by name or alias (case-, dash- and space-insensitive: "ARC-Easy", "social_i_qa")."""
    task = find_task(name)
    if task is None:
        raise KdlensError(
            f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}; families: {', '.join(FAMILIES)}"
        )
    return task


def list_tasks(family: str | None = None) -> list[Task]:
    """Registered tasks (of one family), in registration order (the paper's column order)."""
    if family is not None and family not in FAMILIES:
        raise KdlensError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    return [t for t in _REGISTRY.values() if family is None or t.family == family]


def resolve_tasks(spec: str | Sequence[str]) -> list[Task]:
    """Tasks named by a comma list of task names, aliases, family names or "all" (deduplicated)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise KdlensError("no tasks given; name tasks or families, e.g. --tasks math,commonsense")
    chosen: list[Task] = []
    for part in parts:
        low = _norm(part)
        if low == "all":
            group = [t for t in _REGISTRY.values() if t.family != "synthetic"]
        elif low in FAMILIES:
            group = list_tasks(low)
        else:
            group = [get_task(part)]
        chosen.extend(t for t in group if t not in chosen)
    return chosen
