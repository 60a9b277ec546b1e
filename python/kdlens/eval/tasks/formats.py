"""Record formats of the benchmark families: LLM-Adapters test files and MiniLLM instruction sets.

- LLM-Adapters (math and commonsense): a JSON list of {instruction, input, output, answer}; the
  gold is ``answer`` (never ``output``: in the published math files it is a model-written rationale
  whose final number is sometimes wrong).
- Instruction following (MiniLLM/DistiLLM suite): JSON Lines of {instruction, input, output} where
  ``output`` is one reference or a list of references.
An optional ``id`` field names an item; otherwise its position in the file does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdlens.errors import KdlensError
from kdlens.eval.tasks.registry import Example


def _item_id(record: dict, index: int) -> str:
    value = record.get("id")
    return str(index) if value is None or value == "" else str(value)


def read_llm_adapters(source: str | os.PathLike, **options) -> list[dict]:
    """Records of an LLM-Adapters test file (or hub dataset) with instruction and answer."""
    from kdlens.data.records import load_records

    if options:
        raise KdlensError(f"unknown options for an LLM-Adapters task: {', '.join(options)}")
    ds = load_records(source, required=("instruction", "answer"), split="test",
                      defaults={"input": ""})
    return ds.to_list()


def llm_adapters_example(record: dict, index: int) -> Example:
    answer = record["answer"]
    gold = answer if isinstance(answer, str) else repr(answer) if isinstance(answer, float) else str(answer)
    return Example(id=_item_id(record, index), instruction=record["instruction"],
                   input=record.get("input") or "", gold=gold.strip(), references=(gold.strip(),))


def _read_json_lines_or_list(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise KdlensError(f"{path}: not valid JSON / JSON Lines: {exc}") from exc
    if not rows:
        raise KdlensError(f"{path}: the file holds no records")
    if not all(isinstance(r, dict) for r in rows):
        raise KdlensError(f"{path}: every record must be a JSON object")
    return rows


def read_instruct(source: str | os.PathLike, **options) -> list[dict]:
    """Records of an instruction-following set: instruction, input (optional), output (str or list).

    Local JSON/JSONL files are read with the standard library (``output`` may be a string in one
    record and a list in another); Parquet files and hub ids go through ``datasets``.
    """
    if options:
        raise KdlensError(f"unknown options for an instruction-following task: {', '.join(options)}")
    path = Path(source)
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        if not path.is_file():
            raise KdlensError(f"{path}: no such data file")
        rows = _read_json_lines_or_list(path)
        origin = str(path)
    else:
        from kdlens.data.records import load_records

        rows = load_records(source, required=("instruction", "output"), split="test",
                            defaults={"input": ""}).to_list()
        origin = str(source)
    for i, row in enumerate(rows):
        missing = [f for f in ("instruction", "output") if row.get(f) in (None, "", [])]
        if missing:
            raise KdlensError(f"{origin}: record {i} lacks {', '.join(missing)} "
                              "(instruction-following records need instruction and output)")
    return rows


def instruct_example(record: dict, index: int) -> Example:
    output = record["output"]
    refs = [output] if isinstance(output, str) else list(output)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise KdlensError(f"record {index}: 'output' must be a string or a list of strings")
    return Example(id=_item_id(record, index), instruction=record["instruction"],
                   input=record.get("input") or "", gold=refs[0], references=tuple(refs))
