"""Benchmark: the offline default study (`kdlens study`) end to end — wall time, peak memory and the
findings the miniature must show (issue 7).

Runs ``kdlens study [CONFIG] -o <temp folder>`` in a fresh process session, samples memory and CPU
time of every process of that session (the runner and its unit workers) every 0.5 s, and records
one row via benches/_record.py into benches/results/study_default.csv:

- wall_s; cpu_s: user + system time of the study's processes, sampled every 0.5 s (a slight
  undercount: a process's last half second is missed); on a loaded machine cpu_s / cores is a
  better guide to the quiet-machine wall time than wall_s;
- peak_pss_total_mb: peak of the summed PSS of the session's processes (shared fork-server pages
  counted once); peak_rss_largest_mb: the largest single process;
- load_before / load_after: load averages (the machine may be shared: read timings with them);
- teacher_sft and, per student, sft_<student> / best_kd_<student> (task-aware, T=1, sigma=0);
- kd_gain_smallest: best task-aware KD score minus SFT score for the smallest student, and
  kd_gain_smallest_<method> per method;
- seqkd_T1/T2/T5 and revkd_T1/T2/T5 (ablation student, sigma 0), seqkd_sigma0/1/5 (T=1),
  unaware_delta (task-unaware SeqKD minus task-aware SeqKD, T=1, sigma 0).

Re-run on a quiet machine (one command; ~15 min on 2 cores):
    OMP_WAIT_POLICY=PASSIVE python benches/study_default.py

Other presets or files: ``python benches/study_default.py smoke`` (about a minute); ``--keep DIR``
keeps the study folder instead of a temporary one.
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


def findings(study_dir: Path) -> dict:
    """The key numbers of a finished study, from its tidy scores table."""
    import polars as pl

    scores = pl.read_parquet(study_dir / "results" / "scores.parquet")
    scores = scores.filter(pl.col("task") != "Average")
    avg = (scores.group_by(["student", "teacher", "method", "temperature", "noise_sigma",
                            "teacher_kind", "student_size_b"], maintain_order=True)
           .agg(pl.col("score").mean()))
    row: dict = {}

    def pick(**where) -> float | None:
        sel = avg
        for k, v in where.items():
            sel = sel.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
        return round(float(sel["score"][0]), 2) if sel.height else None

    sft = avg.filter(pl.col("method") == "SFT").sort("student_size_b")
    kd = avg.filter(pl.col("method").is_in(["SeqKD", "RevKD", "GKD"]))
    teachers = [t for t in kd["teacher"].unique().to_list() if t is not None]
    for t in teachers:
        row[f"teacher_sft_{t}"] = pick(method="SFT", student=t)
    students = [s for s in sft["student"].to_list() if s not in teachers]
    for s in students:
        row[f"sft_{s}"] = pick(method="SFT", student=s)
        main = kd.filter((pl.col("student") == s) & (pl.col("teacher_kind") == "task_aware")
                         & (pl.col("temperature") == 1.0) & (pl.col("noise_sigma") == 0.0))
        row[f"best_kd_{s}"] = round(float(main["score"].max()), 2) if main.height else None
    if students:
        small = students[0]
        row["smallest_student"] = small
        base = row[f"sft_{small}"]
        best = row[f"best_kd_{small}"]
        row["kd_gain_smallest"] = None if best is None or base is None else round(best - base, 2)
        for method in ("SeqKD", "RevKD", "GKD"):
            s = pick(student=small, method=method, temperature=1.0, noise_sigma=0.0,
                     teacher_kind="task_aware")
            row[f"kd_gain_smallest_{method}"] = None if s is None else round(s - base, 2)
        ablated = kd.filter(pl.col("temperature") != 1.0)["student"].unique().to_list() or [small]
        ab = ablated[0]
        row["ablation_student"] = ab
        for method in ("SeqKD", "RevKD"):
            for t in (1.0, 2.0, 5.0):
                row[f"{method.lower()}_T{t:g}"] = pick(student=ab, method=method, temperature=t,
                                                       noise_sigma=0.0, teacher_kind="task_aware")
        for sigma in (0.0, 1.0, 5.0):
            row[f"seqkd_sigma{sigma:g}"] = pick(student=ab, method="SeqKD", temperature=1.0,
                                                noise_sigma=sigma, teacher_kind="task_aware")
        unaware = pick(student=ab, method="SeqKD", temperature=1.0, noise_sigma=0.0,
                       teacher_kind="task_unaware")
        aware = row["seqkd_T1"]
        row["unaware_seqkd"] = unaware
        row["unaware_delta"] = None if unaware is None or aware is None else round(unaware - aware, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=None, help="study preset or TOML (default: synthetic)")
    ap.add_argument("--keep", default=None, help="study folder to use and keep (default: a temp folder)")
    args = ap.parse_args()
    from _record import record

    tmp = None
    if args.keep:
        out = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="kdlens-study-bench-")
        out = Path(tmp) / "study"
    try:
        timing = run_study(args.config, out)
        row = {"config": args.config or "synthetic", **timing, **findings(out)}
        record("study_default", [row])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
