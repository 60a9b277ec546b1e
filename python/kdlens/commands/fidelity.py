"""``kdlens fidelity``: BLEU fidelity and answer agreement of student vs teacher generations."""

from __future__ import annotations

import argparse
import sys

NAME = "fidelity"
HELP = ("score student generations against teacher generations: per-pair sacreBLEU-exact BLEU, "
        "answer agreement (and accuracy with a gold column), per-task summary")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", nargs="?", help="teacher generations (.parquet, .jsonl or .csv "
                        "with columns task, id, output, optional gold/answer)")
    parser.add_argument("student", nargs="?", help="student generations, same columns")
    parser.add_argument("-o", "--out", required=True, help="output folder (pairs + summary files)")
    parser.add_argument("--demo", action="store_true", help="score the built-in demo set "
                        "(deterministic teacher/student reasoning pairs written into OUT/demo)")
    parser.add_argument("--demo-pairs", type=int, default=4000, help="pairs in the demo set")
    parser.add_argument("--batch-rows", type=int, default=50_000,
                        help="pairs scored per batch (bounds memory)")
    parser.add_argument("--pairs-format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ray = parser.add_argument_group("backend (README: Ray clusters)")
    ray.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: Ray Data on a cluster, TEACHER and STUDENT "
                          "may be Parquet files, folders or globs of shards; pairs go to OUT/pairs/ "
                          "(pip install 'kdlens[ray]')")
    ray.add_argument("--address", default=None,
                     help="ray: the cluster to join (`ray start --head` prints it); default: a new "
                          "local cluster")
    ray.add_argument("--partitions", type=int, default=None,
                     help="ray: hash partitions of the (task, id) join (default: the cluster's CPUs, "
                          "more for large inputs)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlens.errors import KdlensError
    from kdlens.metrics.stream import score_files

    if args.demo:
        if args.teacher or args.student:
            raise KdlensError("--demo scores the built-in set; do not also give TEACHER and STUDENT")
        from kdlens.demo import write_demo_inputs

        teacher, student = write_demo_inputs(Path(args.out) / "demo", n=args.demo_pairs)
    else:
        if not (args.teacher and args.student):
            raise KdlensError("give TEACHER and STUDENT generation files, or --demo")
        teacher, student = args.teacher, args.student
    if args.backend == "ray":
        from kdlens.metrics.ray_fidelity import score_ray

        if args.pairs_format != "parquet":
            raise KdlensError("--backend ray writes the pairs as Parquet shards; drop --pairs-format csv")
        result = score_ray(teacher, student, args.out, batch_rows=args.batch_rows, partitions=args.partitions,
                           address=args.address, progress=not args.no_progress)
    else:
        if args.address is not None or args.partitions is not None:
            raise KdlensError("--address and --partitions are for --backend ray")
        result = score_files(teacher, student, args.out, batch_rows=args.batch_rows,
                             pairs_format=args.pairs_format, progress=not args.no_progress)
    print(result["markdown"])
    for kind, path in result["paths"].items():
        print(f"{kind}: {path}", file=sys.stderr)
    return 0
