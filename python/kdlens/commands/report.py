"""``kdlens report``: write report.md, a self-contained report.html, figures and CSV tables.

``kdlens report RESULTS -o DIR`` for kdlens tidy tables, ``kdlens report --paper -o OUT`` for the
paper's released CSVs (shipped with kdlens).
"""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "write the study report (Markdown + self-contained HTML, figures, tables) from a results table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kdlens.commands import stats as _stats  # same options as kdlens stats (stdlib-only module)

    _stats.add_arguments(parser)
    for action in parser._actions:  # -o is required here: the report is files
        if action.dest == "output":
            action.required = True
            action.help = "folder for report.md, report.html, figures/ and tables/"


def run(args) -> int:
    from kdlens.commands import stats as _stats
    from kdlens.report import write_report
    from kdlens.stats import analyse

    analysis = analyse(_stats.load_tables(args), bootstrap=args.bootstrap, seed=args.seed, extra_methods=args.method)
    paths = write_report(analysis, args.output)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    for line in analysis.exclusions:
        print(f"left out: {line}")
    return 0
