"""Evaluation: the task registry, decoding, the resumable generation driver, scoring and the run.

``tasks`` (the registry; torch-free) -> ``decode`` (batched KV-cache decoder) -> ``resume``
(part-file driver) -> ``score`` (answers or ROUGE-L per item, per-task tables) -> ``run``
(:func:`kdlens.eval.run.evaluate`, ``kdlens evaluate``). Teacher-student pairing is
:mod:`kdlens.metrics.pairs`. Importing this package imports nothing heavy.
"""
