"""The built-in offline task: kdlens.data.synthetic's arithmetic word problems (test split).

With no data file the test split is generated from options ``seed`` (default 0) and ``n_test``
(default 300), the defaults of :func:`kdlens.data.synthetic.make_task`, so a model trained on
``make_task(seed)``'s train split is evaluated on the matching test split. A ``test.json`` written by
:func:`kdlens.data.synthetic.write_task` works as a data file too, and so does the folder it wrote
(``--data-dir``: ``DIR/test.json`` or ``DIR/synthetic/test.json``). Scored like GSM8K.
"""

from __future__ import annotations

from kdlens.errors import KdlensError
from kdlens.eval.tasks.formats import llm_adapters_example, read_llm_adapters
from kdlens.eval.tasks.registry import Task, register
from kdlens.eval.tasks.rules import LAST_NUMBER

_OPTIONS = ("seed", "n_test", "levels", "operations", "test_share")


def read_synthetic(source=None, **options) -> list[dict]:
    if source is not None:
        return read_llm_adapters(source, **options)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise KdlensError(f"unknown synthetic task option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}")
    from kdlens.data.synthetic import make_task

    kwargs = dict(options)
    for key in ("levels", "operations"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = tuple(v for v in kwargs[key].split("+") if v)
    if "levels" in kwargs:
        kwargs["levels"] = tuple(int(v) for v in kwargs["levels"])
    seed = int(kwargs.pop("seed", 0))
    n_test = int(kwargs.pop("n_test", 300))
    if "test_share" in kwargs:
        kwargs["test_share"] = float(kwargs["test_share"])
    return make_task(seed=seed, n_train=0, n_test=n_test, **kwargs).test


register(Task(
    name="synthetic", family="synthetic", display="Synthetic", metric="accuracy", rule=LAST_NUMBER,
    read=read_synthetic, to_example=llm_adapters_example, folders=("synthetic", "."),
    needs_source=False, description="last number in the output, abs(gold - pred) <= 0.001",
))
