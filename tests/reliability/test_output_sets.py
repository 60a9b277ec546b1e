"""Output sets are committed as one (issue 12 item 1, review D1/D10/F49): a kill at any rename leaves
the folder entirely old or entirely new, a rerun completes it and removes the killed run's staging
folder, and files honour the umask."""

from __future__ import annotations

import os
import stat

import pytest
from kdlens.errors import KdlensError
from kdlens.io import output_set, write_text_atomic

from .helpers import (
    PAPER_RESULTS,
    fingerprint,
    killed_at,
    need_strace,
    rename_points,
    run_kdlens,
    staging_leftovers,
)


def test_output_set_publishes_whole_or_not_at_all(tmp_path):
    out = tmp_path / "set"
    with output_set(out, names=["a.txt", "b.txt"], what="test set") as stage:
        write_text_atomic(stage / "a.txt", "old a")
        write_text_atomic(stage / "b.txt", "old b")
    with pytest.raises(RuntimeError), output_set(out, names=["a.txt", "b.txt"], what="test set") as stage:
        write_text_atomic(stage / "a.txt", "new a")
        raise RuntimeError("failed half-way")
    assert fingerprint(out).keys() == {"a.txt", "b.txt"} and (out / "a.txt").read_text() == "old a"
    assert staging_leftovers(tmp_path) == []
    with output_set(out, names=["a.txt", "b.txt"], what="test set") as stage:
        write_text_atomic(stage / "a.txt", "new a")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the set is replaced, not merged


def test_output_set_refuses_folders_with_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(KdlensError, match=r"holds files that are not part of a test set \(thesis.tex\)"):
        with output_set(tmp_path / "mine", names=["a.txt"], what="test set"):
            pass
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KdlensError, match="exists and is not a folder"):
        with output_set(tmp_path / "afile", names=["a.txt"], what="test set"):
            pass


def test_output_set_keeps_carried_entries_and_cleans_dead_staging(tmp_path):
    out = tmp_path / "o"
    (out / "demo").mkdir(parents=True)
    (out / "demo" / "in.jsonl").write_text("input")
    dead = tmp_path / ".o.kdlens-new-999999999"  # a staging folder of a killed run (no such pid)
    dead.mkdir()
    (dead / "a.txt").write_text("half")
    with output_set(out, names=["a.txt"], carry=["demo"], what="test set") as stage:
        write_text_atomic(stage / "a.txt", "new")
    assert fingerprint(out).keys() == {"a.txt", "demo/in.jsonl"}
    assert staging_leftovers(tmp_path) == []
    # killed between the two renames of the fallback publish: the old set is put back first
    os.rename(out, tmp_path / ".o.kdlens-old-999999999")
    with pytest.raises(RuntimeError), output_set(out, names=["a.txt"], carry=["demo"], what="test set"):
        raise RuntimeError
    assert (out / "a.txt").read_text() == "new" and staging_leftovers(tmp_path) == []


def test_output_set_falls_back_to_two_renames_without_exchange(tmp_path, monkeypatch):
    import kdlens.io as kio

    monkeypatch.setattr(kio, "_exchange", lambda a, b: False)
    out = tmp_path / "o"
    for text in ("old", "new"):
        with output_set(out, names=["a.txt"], what="test set") as stage:
            write_text_atomic(stage / "a.txt", text)
    assert (out / "a.txt").read_text() == "new" and staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "f.txt", "x")
        with output_set(tmp_path / "set", names=["g.txt"], what="test set") as stage:
            write_text_atomic(stage / "g.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "set" / "g.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "set").stat().st_mode) == 0o777 & ~umask


def _report_args(out: str, bootstrap: int) -> list[str]:
    return ["report", "--paper-results", str(PAPER_RESULTS), "-o", out, "--bootstrap", str(bootstrap)]


@pytest.mark.slow
def test_report_killed_at_renames_is_old_or_new_and_rerun_completes(tmp_path):
    """SIGKILL at renames of ``kdlens report`` (a file in the staging folder, the publish): the folder is
    the old report or the new one, never a mix, and a rerun gives the new report and no staging."""
    strace = need_strace()
    run_kdlens(*_report_args("new", 5), cwd=tmp_path)
    new = fingerprint(tmp_path / "new")
    run_kdlens(*_report_args("R", 0), cwd=tmp_path)
    old = fingerprint(tmp_path / "R")
    assert old != new and old.keys() == new.keys()
    points = rename_points(strace, _report_args("R", 5), tmp_path, tmp_path / "trace.txt")
    assert fingerprint(tmp_path / "R") == new and len(points) >= 10
    run_kdlens(*_report_args("R", 0), cwd=tmp_path)
    for i in (len(points) // 2, len(points) - 1):  # a file inside the staging folder; the publish
        assert killed_at(strace, _report_args("R", 5), tmp_path, points[i]) != 0
        state = fingerprint(tmp_path / "R")
        assert state in (old, new), f"killed at rename {i + 1}/{len(points)}: the report folder mixes two runs"
        assert state == old  # the publish is the last rename, so a kill at it keeps the old report
        assert staging_leftovers(tmp_path)  # the killed run's staging folder is left behind ...
        run_kdlens(*_report_args("R", 5), cwd=tmp_path)
        assert fingerprint(tmp_path / "R") == new and staging_leftovers(tmp_path) == []  # ... and cleaned
        if i != len(points) - 1:
            run_kdlens(*_report_args("R", 0), cwd=tmp_path)  # back to the old report for the next kill


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """D10: a kill during an atomic write left ``.<name>.*.tmp`` for ever (train: .result.json.*.tmp)."""
    dead = tmp_path / ".result.json.999999999.abcd1234.tmp"  # written by a process that no longer runs
    dead.write_text("half")
    alive = tmp_path / f".result.json.{os.getpid()}.efgh5678.tmp"  # a write in progress (this process)
    alive.write_text("busy")
    other = tmp_path / ".other.json.999999999.abcd1234.tmp"  # another file's: left to that file's writer
    other.write_text("x")
    write_text_atomic(tmp_path / "result.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "result.json"])
