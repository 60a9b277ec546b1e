"""``kdlens evaluate`` / ``kdlens compare`` with bad input (issue 12 items 4 and 5, review D6, D7, E2-E4,
E8, E12): one-line errors, checked before the model loads, and a failed evaluate never blocks the
corrected rerun into the same folder."""

from __future__ import annotations

import pytest

from kdlens.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Qwen2 saved with a locally trained tokenizer (no download)."""
    import torch
    from transformers import AutoModelForCausalLM

    from kdlens.data.synthetic import make_task, train_tokenizer
    from kdlens.models import tiny_config

    tok = train_tokenizer(make_task(seed=0, n_train=100, n_test=0).texts(), vocab_size=300)
    config = tiny_config("tiny-s1", len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("model")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _evaluate(model, out, *extra):
    return ["evaluate", "--model", str(model), "--tasks", "synthetic", "--task-option", "synthetic.n_test=3",
            "--max-new-tokens", "4", "-o", str(out), "--no-progress", *extra]


def _one_line(capsys, expected):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdlens: error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(("model", "extra", "expected"), [
    ("/nonexistent/model", (), "folder '/nonexistent/model' does not exist"),  # E2: not a hub-id message
    ("EMPTY", (), "holds no config.json"),  # E4: not a sentencepiece hint
    ("GOOD", ("--device", "cuda:7"), "device='cuda:7' but "),  # E8: no traceback, before loading
    ("GOOD", ("--device", "gpu0"), "'gpu0' is not a device"),
])
def test_a_failed_evaluate_never_blocks_its_corrected_rerun(tmp_path, capsys, model_dir, model, extra, expected):
    """D6: run.json was written before the model loaded, so the corrected rerun was refused."""
    (tmp_path / "empty").mkdir()
    bad = {"GOOD": model_dir, "EMPTY": tmp_path / "empty"}.get(model, model)
    assert main(_evaluate(bad, tmp_path / "E", *extra)) == 2
    _one_line(capsys, expected)
    assert main(_evaluate(model_dir, tmp_path / "E")) == 0
    assert (tmp_path / "E" / "generations.parquet").is_file()


def test_compare_output_errors(tmp_path, capsys, model_dir):
    for side in ("t", "s"):
        assert main(_evaluate(model_dir, tmp_path / side)) == 0
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert main(["compare", str(tmp_path / "t"), str(tmp_path / "s"), "-o", str(tmp_path / "afile")]) == 2  # E12
    _one_line(capsys, "exists and is not a folder")
    assert (tmp_path / "afile").read_text() == "x"
