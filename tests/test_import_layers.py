"""The import graph of kdlens has no cycles, counting function-level imports too.

Every ``import kdlens.x`` / ``from kdlens.x import y`` anywhere in a module (top level or inside a
function) is an edge; a function-level import is how a cycle hides, so it counts like any other.
``from kdlens.pkg import name`` is an edge to ``kdlens.pkg.name`` when that is a module, else to
``kdlens.pkg``. Also imports every module in one fresh interpreter, in sorted order.

One line to show it: ``python tests/test_import_layers.py`` prints the layers (modules that import
only modules of earlier layers) or the cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "python" / "kdlens"
# nothing is excluded: study/store.py owns the unit folders and study/lifeline.py the runner's pid, so
# only the CLI and run_study import the scheduler
EXCLUDED: tuple[str, ...] = ()


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the kdlens modules it imports anywhere in its body."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = name if is_pkg else name.rsplit(".", 1)[0]
                    pkg = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1])
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in known and t != name)
        graph[name] = edges
    return graph


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Topological layers; raises ValueError naming a cycle if there is one."""
    remaining = {m: set(e) for m, e in graph.items()}
    out: list[list[str]] = []
    while remaining:
        ready = sorted(m for m, e in remaining.items() if not (e & remaining.keys()))
        if not ready:
            start = min(remaining)
            path = [start]
            while True:  # walk edges inside the remaining set until a module repeats
                nxt = min(e for e in remaining[path[-1]] if e in remaining)
                if nxt in path:
                    raise ValueError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
                path.append(nxt)
        out.append(ready)
        for m in ready:
            del remaining[m]
    return out


def _checked_graph() -> dict[str, set[str]]:
    return {m: {e for e in edges if not e.startswith(EXCLUDED)}
            for m, edges in import_graph().items() if not m.startswith(EXCLUDED)}


def test_import_graph_is_acyclic():
    layers(_checked_graph())  # raises with the cycle


def test_layers_of_the_evaluation_and_metrics_half():
    graph = import_graph()
    # the registry is torch-free, native-free and imports nothing above it
    for name in [m for m in graph if m.startswith("kdlens.eval.tasks")]:
        above = {e for e in graph[name] if not e.startswith(("kdlens.eval.tasks", "kdlens.errors", "kdlens.data"))}
        assert not above, (name, above)
    base = {"kdlens", "kdlens.errors"}  # "kdlens" itself: `from kdlens import _native`
    allowed = {
        "kdlens.metrics.columns": base,
        "kdlens.metrics.bleu": base | {"kdlens.metrics.columns"},
        "kdlens.metrics.answers": base | {"kdlens.metrics.columns", "kdlens.eval.tasks",
                                          "kdlens.eval.tasks.rules"},
        "kdlens.metrics.pairs": base | {"kdlens.metrics", "kdlens.metrics.answers", "kdlens.metrics.bleu",
                                        "kdlens.markdown", "kdlens.io", "kdlens.eval.tasks"},
        "kdlens.objectives": set(),
        "kdlens.markdown": set(),
    }
    for name, ok in allowed.items():
        assert graph[name] <= ok, (name, graph[name] - ok)


def test_registry_imports_no_torch_and_every_module_imports_in_a_fresh_interpreter():
    names = [m for m in modules() if not m.endswith("__main__")]
    code = ("import sys, importlib\n"
            "import kdlens.eval.tasks, kdlens.stats.schema, kdlens.objectives\n"
            "assert 'torch' not in sys.modules, 'the task registry, stats schema or objective table imported torch'\n"
            f"for m in {names!r}:\n    importlib.import_module(m)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


if __name__ == "__main__":
    try:
        for i, layer in enumerate(layers(_checked_graph())):
            print(i, " ".join(layer))
    except ValueError as exc:
        sys.exit(str(exc))
