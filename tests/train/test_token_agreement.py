"""``kdlens compare --token-agreement``: the per-task token-level top-1 agreement along the teacher's
generations, against unbatched plain transformers forwards. Run:
``python -m pytest tests/train/test_token_agreement.py -q``."""

import json

import pytest
import torch

from kdlens.errors import KdlensError


@pytest.fixture(scope="module")
def eval_dirs(task_dir, tmp_path_factory):
    """`kdlens evaluate` folders of a tiny teacher (tiny-s2) and a tiny student (tiny-s1): (teacher eval,
    student eval, teacher folder, student folder)."""
    from kdlens.eval.decode import Decoding
    from kdlens.eval.run import evaluate
    from kdlens.models import load_tokenizer, make_tiny_model

    root = tmp_path_factory.mktemp("token_agreement")
    tok = load_tokenizer(task_dir / "tokenizer")
    dec = Decoding(max_new_tokens=12, batch_size=4, do_sample=True, temperature=1.5)  # varied generations
    folders = []
    for name, seed in (("tiny-s2", 11), ("tiny-s1", 3)):
        model = make_tiny_model(name, tok, seed=seed)
        with torch.no_grad():  # tied random embeddings make a tiny model predict "repeat the last token":
            # a random final-norm gain breaks that, so the two models disagree on some tokens
            gain = torch.randn(model.model.norm.weight.shape, generator=torch.Generator().manual_seed(seed))
            model.model.norm.weight.copy_(1 + 1.5 * gain)
        folder = root / name
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        evaluate(str(folder), "synthetic", root / f"{name}-eval", decoding=dec, data_dir=task_dir, limit=7,
                 progress=False)
        folders.append(folder)
    return root / "tiny-s2-eval", root / "tiny-s1-eval", folders[0], folders[1]


def test_token_agreement_equals_unbatched_forwards(eval_dirs, task_dir):
    from transformers import AutoModelForCausalLM

    from kdlens.eval.token_agreement import token_agreement
    from kdlens.metrics.pairs import load_generations
    from kdlens.models import load_tokenizer

    t_eval, s_eval, teacher_dir, student = eval_dirs
    got = token_agreement(t_eval, s_eval, batch_size=3)
    tok = load_tokenizer(task_dir / "tokenizer")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    stud = AutoModelForCausalLM.from_pretrained(student).eval()
    agree = total = 0
    for r in load_generations(t_eval).iter_rows(named=True):
        prompt = tok(r["prompt"], add_special_tokens=True)["input_ids"]
        output = tok(r["raw_output"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + output])
        with torch.no_grad():
            zt, zs = teacher(input_ids=ids).logits[0], stud(input_ids=ids).logits[0]
        at = slice(len(prompt) - 1, len(prompt) + len(output) - 1)
        agree += int((zt[at].argmax(-1) == zs[at].argmax(-1)).sum())
        total += len(output)
    assert total > 20 and set(got) == {"synthetic"} and 0 < agree < total
    assert got["synthetic"]["tokens"] == total
    assert got["synthetic"]["token_agreement"] == pytest.approx(100.0 * agree / total)
    assert token_agreement(t_eval, t_eval)["synthetic"]["token_agreement"] == 100.0


def test_compare_cli_adds_the_column(eval_dirs, tmp_path, capsys):
    from kdlens.cli import main
    from kdlens.io import read_table

    t_eval, s_eval, _, _ = eval_dirs
    assert main(["compare", str(t_eval), str(s_eval), "--token-agreement", "-o", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "token agreement" in out.splitlines()[0]
    table = read_table(tmp_path / "c" / "comparison.parquet")
    by_task = {r["task"]: r for r in table.iter_rows(named=True)}
    assert 0.0 <= by_task["synthetic"]["token_agreement"] <= 100.0
    assert by_task["Average"]["token_agreement"] == by_task["synthetic"]["token_agreement"]
    assert main(["compare", str(t_eval), str(s_eval)]) == 0  # without the flag: no model is loaded
    assert "token agreement" not in capsys.readouterr().out


def test_token_agreement_needs_the_evaluated_model(eval_dirs, tmp_path):
    from kdlens.eval.token_agreement import token_agreement

    t_eval, s_eval, _, _ = eval_dirs
    moved = tmp_path / "s_eval"
    moved.mkdir()
    for f in s_eval.iterdir():
        if f.is_file():
            (moved / f.name).write_bytes(f.read_bytes())
    info = json.loads((moved / "run.json").read_text())
    info["model_path"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(info))
    with pytest.raises(KdlensError, match="not there any more"):
        token_agreement(t_eval, moved)


def test_teacher_picks_computed_once_give_the_same_agreement(eval_dirs):
    """The study's path: the teacher's argmaxes computed in its eval unit and reused for a student
    equal the agreement that runs both models (the unbatched reference above pins that one)."""
    from kdlens.eval.token_agreement import teacher_picks, token_agreement

    t_eval, s_eval, _, _ = eval_dirs
    picks = teacher_picks(t_eval, batch_size=5)
    assert picks.height == 7 and picks["picks"].list.len().sum() > 20
    assert token_agreement(t_eval, s_eval, teacher_picks=picks) == token_agreement(t_eval, s_eval, batch_size=3)
    assert token_agreement(t_eval, t_eval, teacher_picks=picks)["synthetic"]["token_agreement"] == 100.0
    with pytest.raises(KdlensError, match="do not match the generations"):
        token_agreement(t_eval, s_eval, teacher_picks=picks.head(6))
    with pytest.raises(KdlensError, match="do not match the generations"):  # picks of other token counts
        token_agreement(t_eval, s_eval, teacher_picks=teacher_picks(t_eval, limit=7).with_columns(
            picks=picks["picks"].list.head(1)))


def _with_position_limit(folder, eval_dir, limit: int, out):
    """A copy of model ``folder`` whose config says ``max_position_embeddings = limit``, and a copy of
    its evaluate folder ``eval_dir`` that names it."""
    import shutil

    model = out / "model"
    shutil.copytree(folder, model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = limit
    (model / "config.json").write_text(json.dumps(config))
    evaluated = out / "eval"
    shutil.copytree(eval_dir, evaluated)
    info = json.loads((evaluated / "run.json").read_text())
    info["model_path"] = str(model)
    (evaluated / "run.json").write_text(json.dumps(info))
    return model, evaluated


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_teacher_forcing_stops_at_the_position_limit(eval_dirs, task_dir, tmp_path, side):
    """A model whose position limit cuts some generations short: only the output positions before the
    limit are compared (checked against unbatched plain forwards of the cut sequences), whichever model
    has the limit; teacher picks computed once give the same."""
    from transformers import AutoModelForCausalLM

    from kdlens.eval.token_agreement import teacher_picks, token_agreement
    from kdlens.metrics.pairs import load_generations
    from kdlens.models import load_tokenizer

    t_eval, s_eval, teacher_dir, student = eval_dirs
    tok = load_tokenizer(task_dir / "tokenizer")
    rows = [(tok(r["prompt"], add_special_tokens=True)["input_ids"],
             tok(r["raw_output"], add_special_tokens=False)["input_ids"])
            for r in load_generations(t_eval).iter_rows(named=True)]
    lengths = sorted(len(p) + len(o) for p, o in rows)
    limit = lengths[len(lengths) // 2] - 2  # cuts the generations of about half the sequences
    assert lengths[0] <= limit < lengths[-1]
    if side == "student":
        student, s_eval = _with_position_limit(student, s_eval, limit, tmp_path)
    else:
        teacher_dir, t_eval = _with_position_limit(teacher_dir, t_eval, limit, tmp_path)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    stud = AutoModelForCausalLM.from_pretrained(student).eval()
    agree = total = 0
    for prompt, output in rows:
        ids = torch.tensor([(prompt + output)[:limit]])
        n = min(max(0, ids.shape[1] - len(prompt)), len(output))  # the output tokens the cut keeps
        with torch.no_grad():
            zt, zs = teacher(input_ids=ids).logits[0], stud(input_ids=ids).logits[0]
        at = slice(len(prompt) - 1, len(prompt) - 1 + n)
        agree += int((zt[at].argmax(-1) == zs[at].argmax(-1)).sum())
        total += n
    full = sum(len(o) for _, o in rows)
    assert 0 < total < full
    got = token_agreement(t_eval, s_eval, batch_size=3)["synthetic"]
    assert got["tokens"] == total and got["token_agreement"] == pytest.approx(100.0 * agree / total)
    assert token_agreement(t_eval, s_eval, teacher_picks=teacher_picks(t_eval, batch_size=5))["synthetic"] == got
