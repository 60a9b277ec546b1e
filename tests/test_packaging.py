"""The wheel: build it, check what it carries, install it into a fresh venv, use it from outside.

Builds with ``pip wheel . --no-deps`` (maturin, release profile: a few minutes on 2 cores), so
it is marked slow; CI runs it (the README's test command runs every test).
"""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_builds_installs_and_runs(tmp_path):
    wheels = tmp_path / "wheels"
    env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "target")}  # reuse the build cache
    no_isolation = ["--no-build-isolation"] if _has_maturin() else []  # else pip fetches maturin
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", *no_isolation,
                    "-w", str(wheels), "-q"], check=True, env=env, cwd=tmp_path)
    (wheel,) = wheels.glob("kdlens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("kdlens/_native") for n in names), names
    assert "kdlens/kernels/__init__.py" in names
    for src in sorted((REPO / "kernels").glob("*.py")):
        assert f"kdlens/kernels/{src.name}" in names, f"{src.name} missing from the wheel"
    assert "kdlens/commands/fidelity.py" in names and "kdlens/demo/__init__.py" in names
    for csv in sorted((REPO / "python" / "kdlens" / "stats" / "paper_data").glob("*.csv")):
        assert f"kdlens/stats/paper_data/{csv.name}" in names, f"paper CSV {csv.name} missing"
    for preset in sorted((REPO / "python" / "kdlens" / "study" / "presets").glob("*.toml")):
        assert f"kdlens/study/presets/{preset.name}" in names, f"study preset {preset.name} missing"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    code = ("import kdlens, kdlens._native, kdlens.kernels; "
            "assert 'site-packages' in kdlens.__file__, kdlens.__file__; print(kdlens._native.__version__)")
    res = subprocess.run([str(py), "-c", code], cwd=outside, env=clean, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(env_dir / "bin" / "kdlens"), "--help"], cwd=outside, env=clean,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "fidelity" in res.stdout
    # the main job's plan comes from a preset inside the installed wheel
    res = subprocess.run([str(env_dir / "bin" / "kdlens"), "study", "--dry-run", "-o", "study"],
                         cwd=outside, env=clean, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "units in" in res.stdout and "report synthetic-mini" in res.stdout
    # the paper's released CSVs ship inside the wheel: --paper needs no path. The wheel was installed
    # without its dependencies, so polars/scipy come from this interpreter's site-packages, placed
    # after the venv's own (kdlens itself still loads from the wheel: checked by the path printed)
    deps = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    res = subprocess.run([str(env_dir / "bin" / "kdlens"), "stats", "--paper", "--bootstrap", "0"],
                         cwd=outside, env={**clean, "PYTHONPATH": deps}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Findings of the paper on this data" in res.stdout and "site-packages" in res.stdout


def _has_maturin() -> bool:
    try:
        import maturin  # noqa: F401
        return True
    except ImportError:
        return False
