"""The benchmarks kdlens evaluates on: the paper's math, commonsense and instruction-following sets
and the built-in synthetic task, each a :class:`~kdlens.eval.tasks.registry.Task` in one registry.

``resolve_tasks("math,commonsense")`` / ``get_task("ARC-Easy")`` / ``list_tasks("math")``.
Adding a task: one ``register(Task(...))`` entry in the family's module (math.py, commonsense.py,
instruct.py, synthetic.py) or a new small module imported below.
"""

from kdlens.eval.tasks.registry import (
    FAMILIES,
    METRICS,
    Example,
    Task,
    canonical_task,
    find_task,
    get_task,
    list_tasks,
    register,
    resolve_tasks,
)
# Registration order is the listing order: the paper's families and column order.
from kdlens.eval.tasks import math  # noqa: E402,F401,I001
from kdlens.eval.tasks import commonsense  # noqa: E402,F401
from kdlens.eval.tasks import instruct  # noqa: E402,F401
from kdlens.eval.tasks import synthetic  # noqa: E402,F401
from kdlens.eval.tasks.rules import AnswerRule  # noqa: E402

__all__ = ["FAMILIES", "METRICS", "AnswerRule", "Example", "Task", "canonical_task", "find_task",
           "get_task", "list_tasks", "register", "resolve_tasks"]
