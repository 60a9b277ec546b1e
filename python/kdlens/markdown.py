"""The one Markdown table renderer: every table kdlens prints or writes goes through it.

``markdown_table(["task", "n"], [["gsm8k", "3"]], right=(1,))`` gives::

    | task | n |
    |---|---:|
    | gsm8k | 3 |

Cells are converted with ``str`` and a ``|`` inside a cell is escaped, so a cell never splits a row.
Tests: ``python -m pytest tests/report/test_markdown.py -q``.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]],
                   right: Iterable[int] = ()) -> str:
    """A GitHub-flavoured Markdown table (no trailing newline); ``right``: right-aligned columns."""
    header = list(header)
    right = set(right)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells but the header has {len(header)}")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)
