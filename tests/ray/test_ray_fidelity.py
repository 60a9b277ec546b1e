"""``kdlens fidelity --backend ray`` and kdlens.metrics.ray_fidelity.score_ray on a local Ray cluster
(2 CPUs): over several Parquet shards, in another row order on each side, the summary files are byte
for byte those of the single-machine CLI on the same pairs, and the pair rows are the CLI's; bad
inputs give the CLI's errors."""

import sys
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install 'kdlens[ray]' (CI installs it)")
pytest.importorskip("ray.data", reason="ray is not installed with Ray Data: pip install 'kdlens[ray]'")

from kdlens.cli import main  # noqa: E402
from kdlens.errors import KdlensError  # noqa: E402
from kdlens.metrics.ray_fidelity import score_ray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))
from gen_pairs import make  # noqa: E402

N = 3000
SUMMARY_FILES = ("summary.parquet", "summary.csv", "summary.md")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Teacher (with gold) and student generations as single files for the CLI and as 3 shards each
    for Ray, the student in another order; plus the CLI's output on them."""
    root = tmp_path_factory.mktemp("fidelity")
    pairs = pl.DataFrame(make(N, seed=3))
    teacher = pairs.select("task", "id", "gold", pl.col("teacher_output").alias("output"))
    student = pairs.select("task", "id", pl.col("student_output").alias("output")).sample(
        fraction=1.0, shuffle=True, seed=7)
    teacher.write_parquet(root / "teacher.parquet")
    student.write_parquet(root / "student.parquet")
    for name, frame in (("teacher", teacher), ("student", student)):
        (root / name).mkdir()
        for k, lo in enumerate(range(0, N, 1000)):
            frame.slice(lo, 1000).write_parquet(root / name / f"part-{k}.parquet")
    assert main(["fidelity", str(root / "teacher.parquet"), str(root / "student.parquet"),
                 "-o", str(root / "cli"), "--no-progress", "--batch-rows", "700"]) == 0
    return root


def _ray_pairs(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((folder / "pairs").glob("*.parquet"))).sort("task", "id")


def test_shards_on_ray_equal_the_cli_byte_for_byte(ray_cluster, inputs):
    out = inputs / "ray"
    result = score_ray(str(inputs / "teacher" / "part-*.parquet"), inputs / "student", out,
                       batch_rows=700, progress=False)
    assert result["pairs"] == N
    for name in SUMMARY_FILES:
        assert (out / name).read_bytes() == (inputs / "cli" / name).read_bytes(), name
    shards = list((out / "pairs").glob("*.parquet"))
    assert len(shards) > 1  # scored in several batches, written as several shards
    cli = pl.read_parquet(inputs / "cli" / "pairs.parquet").sort("task", "id")
    assert _ray_pairs(out).equals(cli)


def test_cli_backend_ray_and_a_ray_dataset_give_the_same_summary(ray_cluster, inputs):
    import ray

    out = inputs / "ray-cli"
    assert main(["fidelity", "--backend", "ray", str(inputs / "teacher"), str(inputs / "student" / "*.parquet"),
                 "-o", str(out), "--no-progress", "--partitions", "3"]) == 0
    for name in SUMMARY_FILES:
        assert (out / name).read_bytes() == (inputs / "cli" / name).read_bytes(), name
    teacher = ray.data.read_parquet(str(inputs / "teacher"))
    student = ray.data.from_arrow(pl.read_parquet(inputs / "student.parquet").to_arrow())
    out = inputs / "ray-dataset"
    score_ray(teacher, student, out, progress=False)
    for name in SUMMARY_FILES:
        assert (out / name).read_bytes() == (inputs / "cli" / name).read_bytes(), name


def test_keys_without_a_partner_or_repeated_are_the_clis_errors(ray_cluster, inputs, tmp_path):
    teacher = pl.read_parquet(inputs / "teacher.parquet")
    student = pl.read_parquet(inputs / "student.parquet")
    teacher.slice(0, 500).write_parquet(tmp_path / "t.parquet")
    student.join(teacher.slice(0, 500).select("task", "id"), on=["task", "id"]).slice(3).write_parquet(
        tmp_path / "s.parquet")
    with pytest.raises(KdlensError, match=r"^teacher and student do not cover the same \(task, id\) keys: "
                                          r"3 teacher key\(s\) have no student row, e.g. \("):
        score_ray(tmp_path / "t.parquet", tmp_path / "s.parquet", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing published
    pl.concat([teacher.slice(0, 500), teacher.slice(10, 1)]).write_parquet(tmp_path / "t2.parquet")
    pl.concat([student.join(teacher.slice(0, 500).select("task", "id"), on=["task", "id"]),
               student.join(teacher.slice(10, 1).select("task", "id"), on=["task", "id"])]).write_parquet(
        tmp_path / "s2.parquet")
    key = tuple(teacher.slice(10, 1).select("task", "id").row(0))
    with pytest.raises(KdlensError, match=rf"^teacher: some rows share a \(task, id\) key, e.g. "
                                          rf"\({key[0]}, {key[1]}\)"):
        score_ray(tmp_path / "t2.parquet", tmp_path / "s2.parquet", tmp_path / "out", progress=False)


def test_bad_paths_are_one_line_errors(ray_cluster, tmp_path, capsys):
    assert main(["fidelity", "--backend", "ray", str(tmp_path / "none-*.parquet"), str(tmp_path),
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdlens: error: teacher: no Parquet files at ") and "\n" not in err
    assert main(["fidelity", "--demo", "-o", str(tmp_path / "o"), "--partitions", "2"]) == 2
    assert "--partitions are for --backend ray" in capsys.readouterr().err
