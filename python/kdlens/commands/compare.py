"""``kdlens compare TEACHER_DIR STUDENT_DIR``: teacher-student agreement and BLEU fidelity.

Both folders are outputs of ``kdlens evaluate``. Prints a Markdown table per task and family
average; with ``-o OUT`` also writes OUT/comparison.parquet and OUT/comparison.md.
``--error-analysis`` adds the paper's error analysis (:mod:`kdlens.stats.error_analysis`): per task
the point-biserial correlation of the student's per-item correctness with fidelity (Fisher-z
interval) and example items from the four quadrants; with ``-o`` also OUT/error_analysis.md,
OUT/items.parquet (the per-item pairs, which ``kdlens report`` reads from a results folder) and
OUT/error_correlations.csv and OUT/error_examples.csv.
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
    parser.add_argument("--error-analysis", action="store_true",
                        help="also the per-item error analysis: correctness vs fidelity (point-biserial r with a "
                             "Fisher-z interval) and example items of the four quadrants")
    parser.add_argument("--examples", type=int, default=2, metavar="N",
                        help="example items per quadrant and task in the error analysis (default 2)")
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

    if args.examples < 0:
        raise KdlensError(f"--examples must be >= 0, got {args.examples}")
    if args.batch_size < 1:
        raise KdlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    table = compare(args.teacher_dir, args.student_dir)
    if args.token_agreement:
        from kdlens.eval.token_agreement import token_agreement, with_token_agreement

        table = with_token_agreement(table, token_agreement(args.teacher_dir, args.student_dir,
                                                            batch_size=args.batch_size, device=args.device,
                                                            dtype=args.dtype))
    text = comparison_markdown(table)
    names = ["comparison.parquet", "comparison.md"]
    error_names = ["error_analysis.md", "items.parquet", "error_correlations.csv", "error_examples.csv"]
    errors = None
    if args.error_analysis:
        from kdlens.report.error_tables import error_analysis_markdown
        from kdlens.stats.error_analysis import error_analysis, pair_items

        items = pair_items(args.teacher_dir, args.student_dir)
        errors = error_analysis(items, examples=args.examples)
        text += "\n" + error_analysis_markdown(errors)
        names += error_names
    if args.out:  # checked and written before the table is printed: an error is the only output
        out = Path(args.out)
        # the set may hold the error-analysis files of an earlier run; a run without them drops them
        with output_set(out, names=["comparison.parquet", "comparison.md", *error_names],
                        what="kdlens comparison") as stage:
            write_table_atomic(table, stage / "comparison.parquet")
            write_text_atomic(stage / "comparison.md", comparison_markdown(table))
            if errors is not None:
                write_text_atomic(stage / "error_analysis.md", error_analysis_markdown(errors))
                write_table_atomic(items, stage / "items.parquet")
                write_table_atomic(errors.correlations, stage / "error_correlations.csv")
                write_table_atomic(errors.examples, stage / "error_examples.csv")
    print(text, end="")
    if args.out:
        print(f"wrote {out}/{', '.join(names)}")
    return 0
