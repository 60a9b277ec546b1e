"""The one Markdown table renderer (kdlens.markdown), read back by a small GFM table parser."""

import re

import pytest

from kdlens.markdown import markdown_table


def _parse(text):
    """Header, alignment row and cells of a GFM table: split rows on unescaped pipes, unescape."""
    def cells(line):
        assert line.startswith("| ") or line.startswith("|-"), line
        inner = line.strip()[1:-1]
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]
    lines = text.split("\n")
    return cells(lines[0]), lines[1].strip("|").split("|"), [cells(ln) for ln in lines[2:]]


def test_cells_round_trip_with_pipes_and_alignment():
    rows = [["gsm8k", 3, "a|b"], ["ARC-Easy", 12.5, "x"]]
    text = markdown_table(["task", "n", "label"], rows, right=(1,))
    header, align, body = _parse(text)
    assert header == ["task", "n", "label"]
    assert align == ["---", "---:", "---"]
    assert body == [["gsm8k", "3", "a|b"], ["ARC-Easy", "12.5", "x"]]
    assert not text.endswith("\n")


def test_a_ragged_row_is_an_error():
    with pytest.raises(ValueError, match="2 cells but the header has 3"):
        markdown_table(["a", "b", "c"], [["1", "2"]])
