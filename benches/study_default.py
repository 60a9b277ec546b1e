"""Benchmark: the offline default study (`kdlens study`) end to end — wall time, peak memory and the
findings the miniature must show (issue 7).

Runs ``kdlens study [CONFIG] -o <temp folder>`` in a fresh process session, samples memory and CPU
time of every process of that session (the runner and its unit workers) every 0.5 s, and records
one row via benches/_record.py into benches/results/study_default.csv:

- wall_s; cpu_s: user + system time of the study's processes, sampled every 0.5 s (a slight
  undercount: a process's last half second is missed); on a loaded machine cpu_s / cores is a
  better guide to the quiet-machine wall time than wall_s;
- units_span_s: from the first unit's start to the last unit's end, as the units' unit.json record
  them (equals the study's time in a single session; for a study resumed with --keep it still spans
  every session, gaps included); units_s: the sum of the units' own elapsed times;
- peak_pss_total_mb: peak of the summed PSS of the session's processes (shared fork-server pages
  counted once); peak_rss_largest_mb: the largest single process;
- load_before / load_after: load averages (the machine may be shared: read timings with them);
- per model and configuration, "mean [95% interval]" over seeds from the report's scores table:
  base_<model>, sft_<model>, <method>_<student> (main runs: task-aware, T=1, sigma=0) and the
  ablations <method>_T<t>_<student>, <method>_sigma<s>_<student>, <method>_unaware_<student>;
- "verdict: <finding>" for each of the paper's findings.

It also appends the findings table (verdict, estimate, interval, p, smallest possible p, n) to
benches/results/study_default_verdicts.csv, one row per finding, labelled with ``--variant``.

Re-run on a quiet machine (one command; see the README for the time):
    OMP_WAIT_POLICY=PASSIVE python benches/study_default.py

The same study in another floating-point order (same computation in exact arithmetic, summed
differently: gradients accumulated over 2 micro-batches of 8 instead of 1 of 16, in pretraining
and fine-tuning (the teacher's fine-tuning: 2 of 16 instead of 1 of 32), and decoding in batches of
64 instead of 128):
    python benches/study_default.py --variant fp-order-b --set train.micro_batch_size=8 \
        --set train.grad_accum=2 --set pretrain.micro_batch_size=8 --set pretrain.grad_accum=2 \
        --set teacher_sft.micro_batch_size=16 --set teacher_sft.grad_accum=2 --set evaluate.batch_size=64

Other presets or files: ``python benches/study_default.py smoke`` (about a minute); ``--keep DIR``
keeps (and resumes) the study folder instead of a temporary one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _session_sample(session: int) -> dict[int, tuple[int, int, float]]:
    """pid -> (PSS KiB, RSS KiB, CPU seconds so far) of the processes whose session id is ``session``.

    PSS (proportional set size) splits pages shared by the fork-server's workers among them, so the
    sum over processes is the memory the study really holds; RSS would count shared pages repeatedly.
    """
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is field 3
            if int(fields[3]) != session:  # field 6: session id
                continue
            rss = int(fields[21]) * page_kb  # field 24: resident pages
            cpu = (int(fields[11]) + int(fields[12])) / ticks  # fields 14, 15: utime, stime
            pss = rss
            for line in Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue  # the process ended while being read
        found[int(entry)] = (pss, rss, cpu)
    return found


def run_study(config: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "kdlens", "study", *([config] if config else []), "-o", str(out),
           "--no-progress"]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    peak = {"total": 0, "largest": 0}
    cpu_by_pid: dict[int, float] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            found = _session_sample(proc.pid)
            peak["total"] = max(peak["total"], sum(p for p, _, _ in found.values()))
            peak["largest"] = max([peak["largest"], *(r for _, r, _ in found.values())])
            for pid, (_, _, cpu) in found.items():
                cpu_by_pid[pid] = max(cpu_by_pid.get(pid, 0.0), cpu)
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"kdlens study exited with {rc}; see its output above")
    return {"wall_s": round(wall, 1), "cpu_s": round(sum(cpu_by_pid.values()), 1), "peak_pss_total_mb": round(peak["total"] / 1024, 1),
            "peak_rss_largest_mb": round(peak["largest"] / 1024, 1),
            "load_before": " ".join(f"{x:.2f}" for x in load_before),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def unit_times(study_dir: Path) -> dict:
    """units_span_s and units_s from the unit.json of every finished unit of the study."""
    import json

    started, ended, elapsed = [], [], 0.0
    for path in (study_dir / "units").glob("*/unit.json"):
        unit = json.loads(path.read_text())
        if unit.get("started_unix") and unit.get("ended_unix"):
            started.append(unit["started_unix"])
            ended.append(unit["ended_unix"])
            elapsed += unit.get("elapsed_s") or 0.0
    if not started:
        return {}
    return {"units_span_s": round(max(ended) - min(started), 1), "units_s": round(elapsed, 1)}


def findings(study_dir: Path) -> tuple[dict, list[dict]]:
    """The key numbers of a finished study (from its report tables) and its verdict rows."""
    import polars as pl

    tables = study_dir / "report" / "tables"
    summary = pl.read_csv(tables / "scores_over_seeds.csv")
    verdicts = pl.read_csv(tables / "findings.csv")
    row: dict = {}

    def cell(r: dict) -> str:
        if r["ci_low"] is None or r["ci_low"] != r["ci_low"]:  # one seed: no interval
            return f"{r['mean']:.1f}"
        return f"{r['mean']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"

    for r in summary.filter(pl.col("method") == "SFT").iter_rows(named=True):
        row[f"sft_{r['student']}"] = cell(r)
    for r in summary.filter(pl.col("method") == "BaseModel").iter_rows(named=True):
        row[f"base_{r['student']}"] = cell(r)
    main_runs = summary.filter((pl.col("teacher_kind") == "task_aware") & (pl.col("noise_sigma") == 0.0)
                               & (pl.col("temperature") == 1.0))
    for r in main_runs.iter_rows(named=True):
        row[f"{r['method'].lower()}_{r['student']}"] = cell(r)
    ablation = summary.filter(pl.col("method").is_in(["SeqKD", "RevKD"])
                              & ((pl.col("temperature") != 1.0) | (pl.col("noise_sigma") != 0.0)
                                 | (pl.col("teacher_kind") == "task_unaware")))
    for r in ablation.iter_rows(named=True):
        tag = ("unaware" if r["teacher_kind"] == "task_unaware" else
               f"sigma{r['noise_sigma']:g}" if r["noise_sigma"] else f"T{r['temperature']:g}")
        row[f"{r['method'].lower()}_{tag}_{r['student']}"] = cell(r)
    for r in verdicts.iter_rows(named=True):
        row["verdict: " + r["finding"]] = r["verdict"]
    rows = [{k: r[k] for k in ("finding", "verdict", "estimate", "ci_low", "ci_high", "p_value", "min_p", "n")}
            for r in verdicts.iter_rows(named=True)]
    return row, rows


def with_overrides(config: str | None, overrides: list[str], out: Path) -> str | None:
    """A TOML file: the preset or file ``config`` with ``section.key=value`` overrides applied."""
    if not overrides:
        return config
    from importlib import resources

    import tomllib
    from kdlens.config import parse_override
    from kdlens.study.config import PRESETS

    if config is None or config in PRESETS:
        text = resources.files("kdlens.study.presets").joinpath(f"{config or 'synthetic'}.toml").read_text()
    else:
        text = Path(config).read_text()
    data = tomllib.loads(text)
    for item in overrides:
        key, value = parse_override(item)
        *sections, leaf = key.split(".")
        target = data
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    path = out.parent / f"{out.name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_toml(data))
    return str(path)


def _toml(data: dict) -> str:
    import json

    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=None, help="study preset or TOML (default: synthetic)")
    ap.add_argument("--keep", default=None, help="study folder to use and keep (default: a temp folder); "
                    "running again with the same folder resumes (then wall_s covers only this part)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (e.g. train.grad_accum=2), repeatable")
    ap.add_argument("--variant", default="default", help="label of this run in the results (e.g. fp-order-b)")
    args = ap.parse_args()
    from _record import record

    tmp = None
    if args.keep:
        out = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="kdlens-study-bench-")
        out = Path(tmp) / "study"
    try:
        config = with_overrides(args.config, args.set, out)
        timing = run_study(config, out)
        numbers, verdicts = findings(out)
        base = {"config": args.config or "synthetic", "variant": args.variant, "overrides": " ".join(args.set)}
        record("study_default", [{**base, **timing, **unit_times(out), **numbers}])
        record("study_default_verdicts", [{**base, **v} for v in verdicts])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
