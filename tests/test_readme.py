"""The README's commands are what CI runs and what the package provides."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has a Quick start bash block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_test_command():
    setup_and_main, setup_and_tests = _readme_commands()
    assert setup_and_main.startswith("pip install") and "kdlens study" in setup_and_main
    assert "pytest" in setup_and_tests and "cargo test" in setup_and_tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_and_tests in ci, ".ci/run must run the README's test command verbatim"


def test_readme_names_only_existing_commands_and_benches():
    from kdlens.cli import build_parser

    text = (ROOT / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in set(re.findall(r"`kdlens ([\w-]+)", text)):
        assert name in sub.choices, f"README mentions `kdlens {name}`, which does not exist"
    for script in set(re.findall(r"`(benches/[\w/.]+)", text)):
        assert (ROOT / script.split()[0]).exists(), f"README mentions {script}, which does not exist"
