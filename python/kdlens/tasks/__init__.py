"""The benchmarks kdlens evaluates on: the paper's math, commonsense and instruction-following sets
and the built-in synthetic task, each a :class:`~kdlens.tasks.registry.Task` in one registry.

``resolve_tasks("math,commonsense")`` / ``get_task("ARC-Easy")`` / ``list_tasks("math")``.
Adding a task: one ``register(Task(...))`` entry in the family's module (math.py, commonsense.py,
instruct.py, synthetic.py) or a new small module imported below.
"""

from kdlens.tasks.registry import (
    FAMILIES,
    METRICS,
    Example,
    Task,
    get_task,
    list_tasks,
    register,
    resolve_tasks,
)
from kdlens.tasks import commonsense, instruct, math, synthetic  # noqa: E402,F401  (registration)

__all__ = ["FAMILIES", "METRICS", "Example", "Task", "get_task", "list_tasks", "register",
           "resolve_tasks"]
