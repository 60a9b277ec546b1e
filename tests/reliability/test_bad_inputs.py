"""Every subcommand given bad input ends with exit 2 and one line ``kdlens: error: ...`` that says what
to fix, never a traceback (issue 12 item 4, review D7/D8 and section 1). The commands run in-process
through :func:`kdlens.cli.main`; a table row is (name, argv builder, text the message must contain)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kdlens.cli import main

from .helpers import PAPER_RESULTS

PR = str(PAPER_RESULTS)


def _paper_copy(tmp: Path, file: str = "", line: int = 0, old: str = "", new: str = "") -> str:
    """A copy of the paper's CSVs with one edit: ``old`` -> ``new`` on data line ``line`` of ``file``."""
    dst = tmp / "pr"
    shutil.copytree(PAPER_RESULTS, dst)
    if file:
        lines = (dst / file).read_text().splitlines(keepends=True)
        assert old in lines[line], (file, line, lines[line])
        lines[line] = lines[line].replace(old, new, 1)
        (dst / file).write_text("".join(lines))
    return str(dst)


def _file(tmp: Path, name: str = "afile", data: bytes = b"x") -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def _folder(tmp: Path, name: str) -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


_TOKENIZER: dict[str, str] = {}


def _tok() -> str:
    return f"tokenizer={_TOKENIZER['dir']}"


@pytest.fixture(scope="module", autouse=True)
def tokenizer_dir(tmp_path_factory):
    """A real tokenizer folder (the synthetic task's), for train cases that get past the model check."""
    from kdlens.data.synthetic import make_task, write_task

    root = tmp_path_factory.mktemp("task")
    write_task(root, make_task(seed=0, n_train=40, n_test=4, levels=(1,)), vocab_size=300)
    _TOKENIZER["dir"] = str(root / "tokenizer")


GOOD_DATA = b'[{"instruction": "add 1 and 2", "output": "3"},\n {"instruction": "add 2 and 2", "output": "4"}]\n'
GOOD_LINES = b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
BAD_LINES = GOOD_LINES + b"{oops\n"

TRAIN = ["train", "--preset", "sft", "data=train.json", "student=tiny:tiny-s1", "tokenizer=tok"]

CASES = [
    # --- train: NaN passes a range check, so it must be refused by the type check (T5, T6)
    ("train lr=nan", lambda t: [*TRAIN, f"out_dir={t}/r", "lr=nan"], "config key 'lr' must be a number, got nan"),
    ("train epochs=nan", lambda t: [*TRAIN, f"out_dir={t}/r", "epochs=nan"], "'epochs' must be a number, got nan"),
    ("train max_steps=abc", lambda t: [*TRAIN, f"out_dir={t}/r", "max_steps=abc"], "'max_steps' must be an integer"),
    ("train unknown key", lambda t: [*TRAIN, f"out_dir={t}/r", "stepz=3"], "unknown key(s) stepz"),
    ("train non-UTF-8 TOML", lambda t: ["train", "--config", _file(t, "c.toml", b"lr = '\xff'\n")],
     "not UTF-8 text (byte 6); save the config as UTF-8"),
    ("train missing TOML", lambda t: ["train", "--config", f"{t}/none.toml"], "no such config file"),
    # --- train data and model paths (T8, T11, T14, E4)
    ("train 0-byte data", lambda t: ["train", f"out_dir={t}/r", f"data={_file(t, 'e.json', b'')}",
                                     "student=tiny:tiny-s1", _tok()], "e.json: the file is empty"),
    ("train malformed JSON data", lambda t: ["train", f"out_dir={t}/r", "student=tiny:tiny-s1", _tok(),
                                             f"data={_file(t, 'b.json', GOOD_DATA[:-3] + b',]')}"],
     "b.json: could not be read as json: invalid JSON at line 2, column"),
    ("train malformed JSONL data", lambda t: ["train", f"out_dir={t}/r", "student=tiny:tiny-s1", _tok(),
                                              f"data={_file(t, 'b.jsonl', BAD_LINES)}"],
     "b.jsonl: could not be read as json: invalid JSON at line 3, column 2"),
    ("train missing model folder", lambda t: ["train", f"out_dir={t}/r", f"data={_file(t, 'd.json', GOOD_DATA)}",
                                              "student=/nonexistent/model"],
     "folder '/nonexistent/model' does not exist; give a folder written by save_pretrained"),
    ("train empty model folder", lambda t: ["train", f"out_dir={t}/r", f"data={_file(t, 'd.json', GOOD_DATA)}",
                                            f"student={_folder(t, 'empty')}"], "holds no tokenizer.json"),
    ("train device=cuda:7 (no GPU)", lambda t: [*TRAIN, f"out_dir={t}/r", "device=cuda:7"],
     "device='cuda:7' but "),  # no CUDA here, or fewer than 8 devices
    ("train device=gpu0", lambda t: [*TRAIN, f"out_dir={t}/r", "device=gpu0"], "'gpu0' is not a device"),
    # --- study (U7, U11, U13, U14)
    ("study -o a file", lambda t: ["study", "smoke", "-o", _file(t)], "exists and is not a folder"),
    ("study non-UTF-8 TOML", lambda t: ["study", _file(t, "s.toml", b'name = "\xff"\n')], "not UTF-8 text"),
    ("study -j 0", lambda t: ["study", "smoke", "-j", "0", "--dry-run"], "--jobs must be >= 1"),
    ("study missing config", lambda t: ["study", f"{t}/none.toml"], "no such study config"),
    ("study jobs = 'two'", lambda t: ["study", _file(t, "s.toml", b'jobs = "two"\n'), "--dry-run"],
     "config key 'jobs' must be an integer, got 'two'"),
    # --- stats / report on the paper's CSVs (S5, S6, S7, S4) and -o pointing at a file (S22)
    ("stats non-numeric score", lambda t: ["stats", "--paper-results", _paper_copy(t, "math_results_main.csv", 2,
                                                                                   ",21.83,", ",abc,")],
     "math_results_main.csv, data row 2: gsm8k cell 'abc' is not a number"),
    ("stats n/a in BLEU.csv", lambda t: ["stats", "--paper-results", _paper_copy(t, "BLEU.csv", 1,
                                                                                 ",84.51343178749084,", ",n/a,")],
     "BLEU.csv, data row 1: gsm8k cell 'n/a' is not a number"),
    ("stats blank Student", lambda t: ["stats", "--paper-results", _paper_copy(t, "math_results_main.csv", 2,
                                                                               ",Qwen2.5-1.5B,", ",,")],
     "math_results_main.csv, data row 2: empty Student cell"),
    ("stats renamed Method", lambda t: ["stats", "--paper-results", _paper_copy(t, "math_results_main.csv", 0,
                                                                                "Method", "Methodx")],
     "math_results_main.csv: missing column(s) method"),
    ("stats -o a file", lambda t: ["stats", "--paper-results", PR, "--bootstrap", "0", "-o", _file(t)],
     "exists and is not a folder"),
    ("report -o a file", lambda t: ["report", "--paper-results", PR, "--bootstrap", "0", "-o", _file(t)],
     "exists and is not a folder"),
    ("report -o under a file", lambda t: ["report", "--paper-results", PR, "--bootstrap", "0", "-o",
                                          _file(t) + "/sub/out"], "a file is in the way"),
    ("report -o a folder of other files", lambda t: ["report", "--paper-results", PR, "--bootstrap", "0",
                                                     "-o", str(Path(_file(t)).parent)],
     "holds files that are not part of a kdlens report"),
    ("report --bootstrap -5", lambda t: ["report", "--paper-results", PR, "--bootstrap", "-5", "-o", f"{t}/o"],
     "bootstrap"),
]


def _check_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdlens: error: "), err
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(("name", "argv", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, monkeypatch, name, argv, expected):
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    code = main(args)
    _check_one_line_error(code, capsys.readouterr().err, expected)


@pytest.mark.parametrize(("err", "hint"), [(errno.ENOSPC, "No space left on device; free some space"),
                                           (errno.EROFS, "Read-only file system; choose an output folder"),
                                           (errno.EACCES, "Permission denied; choose a path you may write to")])
def test_environment_errors_while_writing_are_one_line_errors(tmp_path, capsys, monkeypatch, err, hint):
    """A full disk, a read-only file system or a forbidden folder while the report is written (D7)."""
    import polars as pl

    def fail(self, path, *a, **k):
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(pl.DataFrame, "write_csv", fail)
    code = main(["report", "--paper-results", PR, "--bootstrap", "0", "-o", str(tmp_path / "out")])
    _check_one_line_error(code, capsys.readouterr().err, hint)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the staging folder is gone too


@pytest.fixture
def mounted(tmp_path):
    """Mount a tmpfs (as root, where allowed): yields mount(name, options) -> its path."""
    points = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", str(point)], check=False)


def test_read_only_and_full_file_systems_are_one_line_errors(tmp_path, capsys, mounted):
    """D7 on real file systems: a read-only mount and a 64 KiB one that fills up."""
    ro = mounted("ro", "ro,size=1m")
    code = main(["report", "--paper-results", PR, "--bootstrap", "0", "-o", str(ro / "out")])
    _check_one_line_error(code, capsys.readouterr().err, f"{ro / 'out'}: Read-only file system")
    full = mounted("full", "size=64k")
    code = main(["report", "--paper-results", PR, "--bootstrap", "0", "-o", str(full / "out")])
    _check_one_line_error(code, capsys.readouterr().err, f"{full / 'out'}: No space left on device")
    assert list(full.iterdir()) == []  # nothing half-written is left on the full disk
    from kdlens.demo import write_demo_inputs  # fidelity (F41, F42): 4000 demo pairs do not fit in 64 KiB

    teacher, student = write_demo_inputs(tmp_path / "demo", n=4000)
    for out, message in [(ro / "f", f"{ro / 'f'}: Read-only file system"),
                         (full / "f", "No space left on device; free some space")]:
        code = main(["fidelity", str(teacher), str(student), "-o", str(out), "--no-progress"])
        _check_one_line_error(code, capsys.readouterr().err, message)
    assert list(full.iterdir()) == []
