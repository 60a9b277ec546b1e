"""``kdlens compare TEACHER_DIR STUDENT_DIR``: teacher-student answer agreement and BLEU fidelity.

Both folders are outputs of ``kdlens evaluate``. Prints a Markdown table per task and family
average; with ``-o OUT`` also writes OUT/comparison.parquet and OUT/comparison.md.
``--token-agreement`` also loads both evaluated models, teacher-forces them along the teacher's own
generations and adds the per-task token-level top-1 agreement (kdlens.eval.token_agreement).
"""

from __future__ import annotations

NAME = "compare"
HELP = "teacher-student agreement and BLEU fidelity from two evaluation folders"


def add_arguments(parser) -> None:
    parser.add_argument("teacher_dir", help="the teacher's `kdlens evaluate` output folder")
    parser.add_argument("student_dir", help="the student's `kdlens evaluate` output folder")
    parser.add_argument("-o", "--out", help="folder for comparison.parquet and comparison.md")
    parser.add_argument("--token-agreement", action="store_true",
                        help="also the token-level top-1 agreement along the teacher's generations (loads both "
                             "evaluated models)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward (--token-agreement)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (--token-agreement)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="model weight dtype (--token-agreement; default float32)")


def run(args) -> int:
    from pathlib import Path

    from kdlens.errors import KdlensError
    from kdlens.io import output_set, write_table_atomic, write_text_atomic
    from kdlens.metrics.pairs import compare, comparison_markdown

    if args.batch_size < 1:
        raise KdlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    table = compare(args.teacher_dir, args.student_dir)
    if args.token_agreement:
        from kdlens.eval.token_agreement import token_agreement, with_token_agreement

        table = with_token_agreement(table, token_agreement(args.teacher_dir, args.student_dir,
                                                            batch_size=args.batch_size, device=args.device,
                                                            dtype=args.dtype))
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
