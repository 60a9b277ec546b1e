"""Joining a Ray cluster, for the ray backends (``kdlens fidelity --backend ray``, ``kdlens study
--backend ray``). Ray is an optional extra (``pip install 'kdlens[ray]'``), imported only here and
in the functions that run on it.

``connect(None)`` reuses a cluster this process already joined (``ray.init`` called by the caller,
e.g. a test with ``ray.init(num_cpus=2)``), else starts a local one on this machine; ``connect(ADDR)``
joins a running cluster (``ray start --head`` prints ADDR; ``auto`` finds one started on this node).
"""

from __future__ import annotations

from kdlens.errors import KdlensError


def require_ray():
    """The ``ray`` module, or a KdlensError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise KdlensError("the ray backend needs Ray: pip install 'kdlens[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: the one already joined, else a new local one).
    Returns whether this call connected (the caller then disconnects with ``ray.shutdown()``)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise KdlensError(f"could not reach a Ray cluster at {address!r} ({str(exc).splitlines()[0]}); "
                          "start one with `ray start --head` and pass the address it prints") from None
    return True
