"""Fixtures for the report tests: the synthetic study of tests/stats (loaded by path)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "stats" / "synthetic_study.py"


@pytest.fixture(scope="session")
def syn():
    if "synthetic_study" not in sys.modules:
        spec = importlib.util.spec_from_file_location("synthetic_study", _PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["synthetic_study"] = module
    return sys.modules["synthetic_study"]
