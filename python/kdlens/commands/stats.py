"""``kdlens stats``: the paper's hypothesis tests (H1-H5) on a results table, printed as tables.

``kdlens stats --paper`` reads the paper's released CSVs (shipped with kdlens; ``--paper-results DIR``
reads another copy); ``kdlens stats RESULTS`` reads
kdlens tidy tables (a folder with scores.*, agreement.*, fidelity.*, or a scores file). ``-o DIR``
also writes the analysis tables as CSV.
"""

from __future__ import annotations

import argparse

NAME = "stats"
HELP = "run the paper's hypothesis tests (H1-H5) and ablations on a results table and print them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", help="kdlens results: a folder (scores.*, agreement.*, fidelity.*) or a scores file")
    parser.add_argument("--paper", action="store_true", help="use the paper's released CSVs (shipped with kdlens)")
    parser.add_argument("--paper-results", metavar="DIR", help="read the paper's released CSVs from DIR instead")
    parser.add_argument("--agreement", metavar="FILE", help="agreement table (overrides the one in the results folder)")
    parser.add_argument("--fidelity", metavar="FILE", help="fidelity table (overrides the one in the results folder)")
    parser.add_argument("--method", action="append", default=[], metavar="NAME", help="accept an extra KD method name (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals (0: none; default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("-o", "--output", metavar="DIR", help="also write the analysis tables as CSV into DIR")


def load_tables(args):
    """The ResultTables named by the arguments (shared with ``kdlens report``)."""
    from kdlens.errors import KdlensError
    from kdlens.stats import load_paper_results, load_results

    given = [bool(args.results), bool(args.paper_results), bool(getattr(args, "paper", False))]
    if sum(given) != 1:
        raise KdlensError("give exactly one of RESULTS, --paper (the paper's released CSVs) or --paper-results DIR")
    if args.paper_results:
        return load_paper_results(args.paper_results)
    if args.paper:
        return load_paper_results()
    return load_results(args.results, agreement=args.agreement, fidelity=args.fidelity, extra_methods=args.method)


def run(args) -> int:
    from pathlib import Path

    from kdlens.report.render import write_analysis_tables
    from kdlens.report.tables import estimates_table, hypothesis_table
    from kdlens.stats import analyse
    from kdlens.stats.schema import family_order

    analysis = analyse(load_tables(args), bootstrap=args.bootstrap, seed=args.seed, extra_methods=args.method)
    print(f"Source: {analysis.tables.source}\n")
    from kdlens.report.tables import findings_table, pooling_note

    scores = analysis.tables.scores
    pooling = pooling_note(set(scores["student"].to_list()) | set(scores["teacher"].drop_nulls().to_list()))
    for family in family_order(analysis.findings["family"].unique().to_list()):
        print(findings_table(analysis.findings, family, analysis.level).to_markdown())
    for family in family_order(analysis.hypotheses["family"].unique().to_list()):
        print(hypothesis_table(analysis.hypotheses, family, pooling).to_markdown())
        print(estimates_table(analysis.hypotheses, family, analysis.level, analysis.bootstrap_resamples, analysis.seed).to_markdown())
    if analysis.exclusions:
        print("Left out of the analyses:")
        for line in analysis.exclusions:
            print(f"- {line}")
    if args.output:
        paths = write_analysis_tables(analysis, Path(args.output))
        print(f"\nwrote {len(paths)} tables to {args.output}")
    return 0
