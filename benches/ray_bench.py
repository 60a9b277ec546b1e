"""The ray backends against the single-machine ones, on this machine (a local Ray cluster).

``--fidelity N``: ``kdlens fidelity`` on N pairs (benches/fidelity_cli_bench.py's inputs, the
student in another order) in a child process, then ``score_ray`` on the same two files on a local
Ray cluster of ``--cpus`` CPUs (started before the clock starts, as a running cluster would be; its
start-up time is its own column). Rows: pairs/s of each, Ray's overhead in % of the CLI's time,
Ray's pairs/s per CPU and the throughput that projects to per added 16-core node (per-CPU rate x 16:
an upper bound that assumes the join's shuffle scales with the nodes), and whether the summaries
are byte-identical.

``--study PRESET``: the study (default ``smoke``) from scratch on the local backend and on Ray, both
with 2 units at a time; per unit, the scheduling overhead = the runner's wall time for the unit
minus the unit's own ``elapsed_s`` (its ``unit.json``): process start, imports, the Ray task round
trip. Rows: mean and median overhead per unit and the study's wall time, per backend.

    python benches/ray_bench.py --fidelity 1000000
    python benches/ray_bench.py --study smoke

Rows go to benches/results/ray_backends.csv with the 1-minute load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

RAY_FIDELITY = """
import json, sys, time
import ray
for attempt in range(3):  # on a loaded machine the raylet may miss Ray's fixed 30 s start-up window
    t0 = time.perf_counter()
    try:
        ray.init(address="local", num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 * 1024 * 1024, logging_level="ERROR")
        break
    except Exception:
        ray.shutdown()
init_s = time.perf_counter() - t0
from kdlens.metrics.ray_fidelity import score_ray
t0 = time.perf_counter()
result = score_ray(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
wall = time.perf_counter() - t0
ray.shutdown()
print("RESULT " + json.dumps({"init_s": init_s, "wall_s": wall, "pairs": result["pairs"]}))
"""

STUDY = """
import json, sys, time
from kdlens.study import load_study_config
from kdlens.study.runner import run_study
cfg = load_study_config(sys.argv[1])
lines = []
backend = None
if sys.argv[3] == "ray":
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=150 * 1024 * 1024, logging_level="ERROR")
    from kdlens.study.ray_backend import RayBackend
    backend = RayBackend(jobs=2)
t0 = time.perf_counter()
outcome = run_study(cfg, sys.argv[2], jobs=2, progress=False, echo=lines.append, backend=backend)
wall = time.perf_counter() - t0
assert outcome.ok, lines
print("RESULT " + json.dumps({"wall_s": wall, "lines": lines}))
"""


def _child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not found:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(found[-1][len("RESULT "):])


def bench_fidelity(n: int, cpus: int, workdir: str | None) -> list[dict]:
    from fidelity_cli_bench import child_command, run_cli

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, str(Path(__file__).with_name("fidelity_cli_bench.py")), "--pairs",
                        str(n), "--shuffled", "--write-only", str(tmp)], check=True)
        t_path, s_path = tmp / "teacher.parquet", tmp / "student.parquet"
        cli_wall, cli_rss, _ = run_cli(child_command("kdlens", t_path, s_path, tmp / "cli", 50_000))
        ray_run = _child(RAY_FIDELITY, str(t_path), str(s_path), str(tmp / "ray"), str(cpus))
        same = all((tmp / "cli" / f).read_bytes() == (tmp / "ray" / f).read_bytes()
                   for f in ("summary.parquet", "summary.csv", "summary.md"))
    cli_rate, ray_rate = n / cli_wall, n / ray_run["wall_s"]
    common = {"bench": "fidelity", "pairs": n, "load_1m": round(load, 2), "cpus": cpus}
    return [
        {**common, "backend": "cli", "wall_s": round(cli_wall, 2), "pairs_per_s": round(cli_rate),
         "peak_rss_mb": round(cli_rss)},
        {**common, "backend": "ray", "wall_s": round(ray_run["wall_s"], 2), "pairs_per_s": round(ray_rate),
         "ray_init_s": round(ray_run["init_s"], 2),
         "overhead_pct_vs_cli": round(100 * (ray_run["wall_s"] / cli_wall - 1), 1),
         "pairs_per_s_per_cpu": round(ray_rate / cpus),
         "projected_pairs_per_s_per_16core_node": round(16 * ray_rate / cpus),
         "summary_identical": same},
    ]


def _overheads(study_dir: Path, lines: list[str]) -> list[float]:
    """Per finished unit: the runner's wall time minus the unit's own elapsed_s."""
    plan = json.loads((study_dir / "plan.json").read_text())
    by_label = {u["label"]: u["id"] for u in plan["units"]}
    out = []
    for line in lines:
        m = re.match(r"\[done\s+([\d.]+)s\] (.*?)( \(after .*)?$", line)
        if m and m.group(2) in by_label:
            rec = json.loads((study_dir / "units" / by_label[m.group(2)] / "unit.json").read_text())
            out.append(float(m.group(1)) - rec["elapsed_s"])
    return out


def bench_study(preset: str, workdir: str | None) -> list[dict]:
    rows = []
    for backend in ("local", "ray"):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            run = _child(STUDY, preset, str(Path(tmp) / "study"), backend)
            over = _overheads(Path(tmp) / "study", run["lines"])
        rows.append({"bench": f"study-{preset}", "backend": backend, "load_1m": round(load, 2), "cpus": 2,
                     "units": len(over), "wall_s": round(run["wall_s"], 1),
                     "overhead_per_unit_mean_s": round(statistics.mean(over), 2),
                     "overhead_per_unit_median_s": round(statistics.median(over), 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fidelity", type=int, default=None, metavar="N", help="pairs to score")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--study", default=None, metavar="PRESET")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    rows = []
    if args.fidelity:
        rows += bench_fidelity(args.fidelity, args.cpus, args.workdir)
    if args.study:
        rows += bench_study(args.study, args.workdir)
    if not rows:
        ap.error("give --fidelity N and/or --study PRESET")
    for row in rows:
        print(row)
    record("ray_backends", rows)


if __name__ == "__main__":
    main()
