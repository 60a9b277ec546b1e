"""Every kernels/NAME.py ships as kdlens.kernels.NAME through a file symlink (maturin drops directory links).

Run: python -m pytest tests/losses/test_kernel_links.py -q
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def missing_kernel_links(kernels_dir: Path, package_dir: Path) -> list[str]:
    """Names of kernels/*.py without a file symlink package_dir/NAME.py -> ../../../kernels/NAME.py."""
    missing = []
    for source in sorted(kernels_dir.glob("*.py")):
        link = package_dir / source.name
        if not link.is_symlink() or os.readlink(link) != f"../../../kernels/{source.name}":
            missing.append(source.name)
        elif link.resolve() != source.resolve():
            missing.append(source.name)
    return missing


def test_every_kernel_has_its_link():
    assert missing_kernel_links(ROOT / "kernels", ROOT / "python" / "kdlens" / "kernels") == []


def test_a_kernel_without_a_link_is_reported(tmp_path):
    kernels = tmp_path / "kernels"
    package = tmp_path / "python" / "kdlens" / "kernels"
    kernels.mkdir()
    package.mkdir(parents=True)
    (kernels / "linked.py").write_text("x = 1\n")
    (kernels / "forgotten.py").write_text("x = 2\n")
    (package / "linked.py").symlink_to("../../../kernels/linked.py")
    (package / "copied.py").write_text("x = 3\n")  # a copy is not a link
    (kernels / "copied.py").write_text("x = 3\n")
    assert missing_kernel_links(kernels, package) == ["copied.py", "forgotten.py"]


def test_linked_kernels_import_as_kdlens_kernels():
    import importlib

    for source in (ROOT / "kernels").glob("*.py"):
        module = importlib.import_module(f"kdlens.kernels.{source.stem}")
        assert Path(module.__file__).resolve() == source.resolve()
