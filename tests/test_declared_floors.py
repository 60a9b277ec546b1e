"""The oldest-versions CI job installs .ci/floors.txt: it must pin every direct requirement of
pyproject.toml (dependencies and the test extra) at exactly the floor pyproject declares."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ci_floors", ROOT / ".ci" / "floors.py")
floors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floors)


def test_floors_txt_pins_every_direct_requirement_at_its_declared_floor():
    assert floors.problems(floors.direct_requirements(), floors.pinned(), installed=False) == []


def test_the_floor_check_reports_drift_missing_pins_and_unbounded_requirements(tmp_path):
    reqs = ["numpy>=1.26,<3", "Torch>=2.8", "triton>=3.4; platform_system == 'Linux'", "tqdm", "pyarrow>=14"]
    pins = {"numpy": "1.26.0", "torch": "2.7.1", "triton": "3.4.0", "pyarrow": "14.0.0", "scipy": "1.11.1"}
    assert sorted(floors.problems(reqs, pins, installed=False)) == sorted([
        "floors.txt pins scipy, which is not a direct requirement",
        "torch: floors.txt pins 2.7.1 but pyproject.toml declares >=2.8",
        "tqdm declares no floor (>=) in pyproject.toml",
    ])
    (tmp_path / "f.txt").write_text("# c\nnumpy>=1.26\n")
    try:
        floors.pinned(tmp_path / "f.txt")
    except ValueError as exc:
        assert "not an exact pin" in str(exc)
    else:
        raise AssertionError("a range in floors.txt must be refused")


def test_torch_floor_is_the_first_release_with_mm_out_dtype():
    # kernels/kd_fused_linear.py calls torch.mm/addmm(..., out_dtype=torch.float32); the aten
    # overloads mm.dtype/addmm.dtype first shipped in torch 2.8.0 (pytorch#150812; Liger-Kernel gates its
    # addmm(out_dtype=) path on torch >= 2.8). The oldest-versions CI job runs this on torch 2.8.0.
    assert floors.declared_floors(floors.direct_requirements())["torch"] == "2.8"
    torch = __import__("pytest").importorskip("torch")
    schemas = [str(s) for s in torch._C._jit_get_schemas_for_operator("aten::mm")]
    assert any("out_dtype" in s for s in schemas), schemas
