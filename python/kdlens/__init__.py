"""kdlens: run and analyse knowledge-distillation studies of language models, fast.

Stages (each a module, each usable alone): ``kdlens.losses`` (KD divergences: reference, chunked,
Triton), ``kdlens.train``, ``kdlens.eval``, ``kdlens.metrics`` (Rust BLEU fidelity and answer
agreement), ``kdlens.stats`` and ``kdlens.report``, ``kdlens.study`` (the whole grid).
Heavy dependencies (torch, transformers) are imported by the stages that need them, never here.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from kdlens.errors import KdlensError

try:
    __version__ = _version("kdlens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["KdlensError", "__version__"]
