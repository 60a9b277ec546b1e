"""``kdlens study [CONFIG]``: run a whole KD study (default: the offline synthetic miniature)."""

NAME = "study"
HELP = "run a whole distillation study and write its report (default: offline synthetic miniature)"


def add_arguments(parser):
    from kdlens.study.config import PRESETS  # light: no torch, no polars

    parser.add_argument(
        "config", nargs="?", default=None,
        help=f"study TOML file or preset name ({', '.join(PRESETS)}); default: synthetic")
    parser.add_argument("-o", "--output", default="kdlens-study",
                        help="study folder (units, report); re-running resumes (default: %(default)s)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="units to run in parallel (default: the config's `jobs`)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show the plan and what is already done, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("backend (where units run; README: Ray clusters)")
    ray.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: processes on this machine (default); ray: Ray tasks on a cluster "
                          "(pip install 'kdlens[ray]')")
    ray.add_argument("--address", default=None,
                     help="ray: the cluster to join (`ray start --head` prints it; `auto`: the one on "
                          "this node); default: a new local cluster")
    ray.add_argument("--max-retries", type=int, default=2,
                     help="ray: times a unit whose worker died is started again (default: %(default)s)")
    ray.add_argument("--cpus-per-unit", type=int, default=None,
                     help="ray: CPUs each unit asks for (default: what it gets on the local backend)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from kdlens.errors import KdlensError
    from kdlens.study import load_study_config, plan_study, run_study
    from kdlens.study.runner import describe_plan

    cfg = load_study_config(args.config)
    out = Path(args.output)
    if args.jobs is not None and args.jobs < 1:
        raise KdlensError("--jobs must be >= 1")
    if args.backend == "local" and (args.address or args.cpus_per_unit is not None):
        raise KdlensError("--address and --cpus-per-unit are for --backend ray")
    if args.dry_run:
        print(describe_plan(plan_study(cfg), out))
        return 0
    if args.backend == "ray":
        from kdlens.metrics.ray_cluster import connect
        from kdlens.study.ray_backend import RayBackend

        backend = RayBackend(max_retries=args.max_retries, jobs=args.jobs, cpus_per_unit=args.cpus_per_unit)
        started = connect(args.address)
        try:
            outcome = run_study(cfg, out, jobs=args.jobs, progress=not args.no_progress, backend=backend)
        finally:
            if started:
                import ray

                ray.shutdown()
    else:
        outcome = run_study(cfg, out, jobs=args.jobs, progress=not args.no_progress)
    print(f"study {cfg.name}: {len(outcome.done)} units run, {len(outcome.skipped)} already done, "
          f"{len(outcome.failed)} failed, {len(outcome.blocked)} blocked, {outcome.elapsed_s:.0f} s")
    if not outcome.ok:
        print(f"kdlens: error: the study is incomplete; fix the failures above and run the same "
              f"command again to resume ({out})", file=sys.stderr)
        return 1
    print(f"report: {outcome.report_dir / 'report.md'}")
    return 0
