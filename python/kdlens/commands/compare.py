"""``kdlens compare TEACHER_DIR STUDENT_DIR``: teacher-student answer agreement and BLEU fidelity.

Both folders are outputs of ``kdlens evaluate``. Prints a Markdown table per task and family
average; with ``-o OUT`` also writes OUT/comparison.parquet and OUT/comparison.md.
"""

from __future__ import annotations

NAME = "compare"
HELP = "teacher-student agreement and BLEU fidelity from two evaluation folders"


def add_arguments(parser) -> None:
    parser.add_argument("teacher_dir", help="the teacher's `kdlens evaluate` output folder")
    parser.add_argument("student_dir", help="the student's `kdlens evaluate` output folder")
    parser.add_argument("-o", "--out", help="folder for comparison.parquet and comparison.md")


def run(args) -> int:
    from pathlib import Path

    from kdlens.io import output_set, write_table_atomic, write_text_atomic
    from kdlens.metrics.pairs import compare, comparison_markdown

    table = compare(args.teacher_dir, args.student_dir)
    text = comparison_markdown(table)
    if args.out:  # checked and written before the table is printed: an error is the only output
        out = Path(args.out)
        with output_set(out, names=("comparison.parquet", "comparison.md"), what="kdlens comparison") as stage:
            write_table_atomic(table, stage / "comparison.parquet")
            write_text_atomic(stage / "comparison.md", text)
    print(text, end="")
    if args.out:
        print(f"wrote {out}/comparison.parquet, comparison.md")
    return 0
