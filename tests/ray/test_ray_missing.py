"""Without ray installed, the ray backends are a one-line error that says how to install it."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
sys.modules["ray"] = None  # as if ray were not installed
from kdlens.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["fidelity", "--backend", "ray", "--demo", "--demo-pairs", "20"],
                                  ["study", "smoke", "--backend", "ray", "--no-progress"]])
def test_ray_backend_without_ray_is_a_clear_error(tmp_path, args):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args, "-o", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "kdlens: error: the ray backend needs Ray: pip install 'kdlens[ray]'"
