"""Append benchmark rows to ``benches/results/<name>.csv`` with the context that makes them comparable.

Every row carries: UTC time, git commit, host CPU, core count, device, Python/torch/kdlens versions,
plus the benchmark's own columns. Rows are only compared within the same run and device.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def context(device: str | None = None) -> dict:
    """The columns every benchmark row starts with."""
    row = {
        "utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        row["torch"] = torch.__version__
        if device is None:
            device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        row["torch"] = ""
    try:
        from importlib.metadata import version

        row["kdlens"] = version("kdlens")
    except Exception:
        row["kdlens"] = ""
    row["device"] = device or "cpu"
    return row


def record(name: str, rows: list[dict], device: str | None = None) -> Path:
    """Append ``rows`` (each merged after the shared context) to benches/results/<name>.csv."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    ctx = context(device)
    full = [{**ctx, **r} for r in rows]
    existing: list[dict] = []
    if path.exists():
        with open(path, newline="") as f:
            existing = list(csv.DictReader(f))
    fields: list[str] = []
    for r in existing + full:
        for k in r:
            if k not in fields:
                fields.append(k)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(existing + full)
    os.replace(tmp, path)
    for r in full:
        print(", ".join(f"{k}={v}" for k, v in r.items() if k not in ctx))
    return path
