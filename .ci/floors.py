"""The oldest-versions CI job's helper: the declared floors of pyproject.toml against .ci/floors.txt.

    python .ci/floors.py requirements   # print the direct requirements (dependencies + test extra)
    python .ci/floors.py check          # floors.txt pins every direct requirement at its declared
                                        # floor, and (when installed) those versions are installed

Standard library only: it runs in a fresh environment before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?$")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


def declared_floors(requirements: list[str]) -> dict[str, str | None]:
    """name -> the version of its `>=` clause (None when it declares no floor)."""
    out: dict[str, str | None] = {}
    for req in requirements:
        m = _REQ.match(req)
        if not m:
            raise ValueError(f"cannot read requirement {req!r}")
        name, spec = canonical(m.group(1)), m.group(2)
        floor = next((c.strip()[2:].strip() for c in spec.split(",") if c.strip().startswith(">=")), None)
        out[name] = floor
    return out


def pinned(floors_txt: Path = ROOT / ".ci" / "floors.txt") -> dict[str, str]:
    """name -> version of every `name==version` line of a constraints file."""
    out = {}
    for line in floors_txt.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{floors_txt.name}: {line!r} is not an exact pin (name==version)")
            out[canonical(name)] = version.strip()
    return out


def _same_version(a: str, b: str) -> bool:
    """1.3 == 1.3.0 (trailing zero release parts do not count)."""
    def parts(v: str) -> list[str]:
        p = v.split(".")
        while len(p) > 1 and p[-1] == "0":
            p.pop()
        return p
    return parts(a) == parts(b)


def problems(requirements: list[str], pins: dict[str, str], installed: bool) -> list[str]:
    found = []
    floors = declared_floors(requirements)
    found += [f"floors.txt pins {name}, which is not a direct requirement" for name in pins if name not in floors]
    for name, floor in floors.items():
        if floor is None:
            found.append(f"{name} declares no floor (>=) in pyproject.toml")
        elif name not in pins:
            found.append(f"{name} is not pinned in .ci/floors.txt (add {name}=={floor})")
        elif not _same_version(pins[name], floor):
            found.append(f"{name}: floors.txt pins {pins[name]} but pyproject.toml declares >={floor}")
        elif installed:
            try:
                have = metadata.version(name)
            except metadata.PackageNotFoundError:
                found.append(f"{name} is not installed")
                continue
            if not _same_version(have.split("+")[0], pins[name]):
                found.append(f"{name} {have} is installed, not the floor {pins[name]}")
    return found


def main(argv: list[str]) -> int:
    if argv == ["requirements"]:
        print("\n".join(direct_requirements()))
        return 0
    if argv == ["check"]:
        found = problems(direct_requirements(), pinned(), installed=True)
        for p in found:
            print(f"floors: {p}", file=sys.stderr)
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
