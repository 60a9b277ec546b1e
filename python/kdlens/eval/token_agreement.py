"""Token-level top-1 agreement of a student with its teacher along the teacher's own generations.

For every generation in the teacher's ``kdlens evaluate`` folder, the prompt (tokenised as evaluation
tokenised it: with the tokenizer's special tokens) followed by the teacher's raw output (tokenised
without them) is fed to both models (teacher forcing); at each output position, i.e. each position whose
next token is an output token, the student agrees when its argmax next token is the teacher's argmax.
Per task: ``tokens`` (output positions compared) and ``token_agreement`` (percent of them that agree).
Teacher forcing stops at each model's position limit (``max_position_embeddings``): an output position
past either model's limit is not compared, and ``tokens`` counts only the positions that were.
A finer "reasoning fidelity" than BLEU over decoded text: it asks whether the student would have made
each of the teacher's next-token choices given the teacher's own context.

The models are loaded one at a time (the teacher's argmaxes are kept as small integer arrays), and
``batch_size`` sequences run per forward. Both models must share the tokenizer's vocabulary.
The teacher's side depends on the teacher alone: :func:`teacher_picks` computes it once (a study does
so in the teacher's eval unit) and ``token_agreement(..., teacher_picks=frame)`` reuses it for every
student, so each comparison runs only the student.
Tests: tests/train/test_token_agreement.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdlens.errors import KdlensError


def _run_info(folder: Path) -> dict:
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise KdlensError(f"{folder}: no run.json; token agreement needs a `kdlens evaluate` folder of a model "
                          "folder (it loads the model again)")
    info = json.loads(path.read_text())
    model = info.get("model_path")
    if not model or not (Path(model).exists() or not Path(model).is_absolute()):
        raise KdlensError(f"{folder}/run.json names model {model!r}, which is not there any more; "
                          "token agreement needs the evaluated model")
    return info


def teacher_sequences(teacher_dir, tokenizer, limit: int | None = None):
    """(task, prompt ids + output ids, number of output tokens) for each teacher generation."""
    from kdlens.metrics.pairs import load_generations

    frame = load_generations(teacher_dir)
    rows = []
    for r in frame.select("task", "prompt", "raw_output").iter_rows(named=True):
        prompt = list(tokenizer(r["prompt"], add_special_tokens=True)["input_ids"])
        output = list(tokenizer(r["raw_output"] or "", add_special_tokens=False)["input_ids"])
        rows.append((r["task"], prompt + output, len(output)))
    return rows[:limit] if limit else rows


def position_limit(config) -> int | None:
    """The longest sequence a model config's positions cover (``max_position_embeddings``), or None."""
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def outputs_within(length: int, n_out: int, limit: int | None) -> int:
    """How many of a sequence's ``n_out`` output tokens (its last ones, of ``length``) lie before ``limit``."""
    return n_out if limit is None else max(0, n_out - max(0, length - limit))


def output_argmax(model, sequences, *, batch_size: int, pad_id: int, device) -> list:
    """Per sequence, the model's argmax next token at its output positions (numpy int32 arrays). A
    sequence longer than the model's position limit is cut there, so its array covers only the output
    positions before the limit (its first ones: a causal model's picks do not depend on later tokens)."""
    import torch

    from kdlens.models import hidden_states_and_head

    limit = position_limit(model.config)
    cut = [(seq[:limit] if limit else seq, outputs_within(len(seq), n_out, limit)) for _, seq, n_out in sequences]
    out = []
    with torch.no_grad():
        for start in range(0, len(cut), batch_size):
            chunk = cut[start:start + batch_size]
            width = max(len(seq) for seq, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, (seq, _) in enumerate(chunk):
                ids[i, :len(seq)] = torch.tensor(seq)
                mask[i, :len(seq)] = 1
            hidden, weight = hidden_states_and_head(model, ids.to(device), mask.to(device))
            for i, (seq, n_out) in enumerate(chunk):
                if n_out == 0:
                    out.append(torch.zeros(0, dtype=torch.int32).numpy())
                    continue
                rows = hidden[i, len(seq) - n_out - 1:len(seq) - 1]  # positions predicting the output tokens
                out.append((rows.float() @ weight.float().t()).argmax(-1).to(torch.int32).cpu().numpy())
    return out


def _tokenizer_of(info: dict):
    from kdlens.models import load_tokenizer

    for source in (info.get("adapter"), info["model_path"]):
        if source and any((Path(source) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return load_tokenizer(source, padding_side="right")
    return load_tokenizer(info["model_path"], padding_side="right")


def _model_argmax(info: dict, sequences, pad_id: int, *, batch_size: int, device, dtype) -> list:
    import torch

    from kdlens.models import load_causal_lm, pick_device

    dev = pick_device(device, option="--device")
    model = load_causal_lm(info["model_path"], adapter=info.get("adapter"),
                           dtype=getattr(torch, dtype) if dtype else None, device=dev)
    return output_argmax(model, sequences, batch_size=batch_size, pad_id=pad_id, device=dev)


def _teacher_side(teacher_dir, limit: int | None):
    """(run info, tokenizer, teacher sequences) of a teacher's evaluate folder, which must hold generations."""
    info = _run_info(Path(teacher_dir))
    tok = _tokenizer_of(info)
    sequences = teacher_sequences(teacher_dir, tok, limit)
    if not sequences:
        raise KdlensError(f"{teacher_dir}: no generations to teacher-force")
    return info, tok, sequences


def teacher_picks(teacher_dir: str | os.PathLike, *, batch_size: int = 32, device: str | None = None,
                  dtype: str | None = None, limit: int | None = None):
    """The teacher's side of :func:`token_agreement`, computed once: a frame with one row per teacher
    generation (in the folder's order): ``task``, ``length`` (prompt + output tokens) and ``picks``
    (the teacher's argmax next token at each output position before its position limit, list of int32)."""
    import polars as pl

    info, tok, sequences = _teacher_side(teacher_dir, limit)
    picks = _model_argmax(info, sequences, tok.pad_token_id, batch_size=batch_size, device=device, dtype=dtype)
    return pl.DataFrame({"task": [t for t, _, _ in sequences], "length": [len(ids) for _, ids, _ in sequences],
                         "picks": [p.tolist() for p in picks]},
                        schema={"task": pl.String, "length": pl.Int64, "picks": pl.List(pl.Int32)})


def token_agreement(teacher_dir: str | os.PathLike, student_dir: str | os.PathLike, *, batch_size: int = 32,
                    device: str | None = None, dtype: str | None = None, limit: int | None = None,
                    teacher_picks=None) -> dict:
    """task -> {"tokens": compared output positions, "token_agreement": percent that agree} of the
    student (model of ``student_dir``) against the teacher (model of ``teacher_dir``), both
    ``kdlens evaluate`` folders. ``teacher_picks``: the frame :func:`teacher_picks` made for
    ``teacher_dir`` (same ``limit``); without it the teacher is run here."""
    import numpy as np

    t_info, tok, sequences = _teacher_side(teacher_dir, limit)
    s_info = _run_info(Path(student_dir))
    if _tokenizer_of(s_info).get_vocab() != tok.get_vocab():
        raise KdlensError("teacher and student tokenizers differ; token-level agreement needs a shared vocabulary")
    if teacher_picks is None:
        t_picks = _model_argmax(t_info, sequences, tok.pad_token_id, batch_size=batch_size, device=device,
                                dtype=dtype)
    else:
        from transformers import AutoConfig

        t_limit = position_limit(AutoConfig.from_pretrained(t_info["model_path"]))
        shape = [(task, len(ids), outputs_within(len(ids), n_out, t_limit)) for task, ids, n_out in sequences]
        given = [(r["task"], r["length"], len(r["picks"])) for r in teacher_picks.iter_rows(named=True)]
        if given != shape:
            raise KdlensError(f"the teacher picks given do not match the generations in {teacher_dir} "
                              f"({len(given)} rows for {len(shape)} generations, or other token counts); "
                              "compute them again with teacher_picks() on this folder")
        t_picks = [np.asarray(p, dtype=np.int32) for p in teacher_picks["picks"].to_list()]
    s_picks = _model_argmax(s_info, sequences, tok.pad_token_id, batch_size=batch_size, device=device, dtype=dtype)
    totals: dict[str, list[int]] = {}
    for (task, _, _), t_pick, s_pick in zip(sequences, t_picks, s_picks):
        m = min(t_pick.size, s_pick.size)  # the output positions before both models' position limits
        tot = totals.setdefault(task, [0, 0])
        tot[0] += int((t_pick[:m] == s_pick[:m]).sum())
        tot[1] += m
    return {task: {"tokens": n, "token_agreement": 100.0 * agree / n if n else None}
            for task, (agree, n) in totals.items()}


def with_token_agreement(table, by_task: dict):
    """The ``kdlens compare`` table with a ``token_agreement`` column (percent; family "Average" rows:
    the unweighted mean over the family's tasks, as for the other columns) and ``tokens``."""
    import polars as pl

    rows = [{"task": t, "tokens": v["tokens"], "token_agreement": v["token_agreement"]} for t, v in by_task.items()]
    extra = pl.DataFrame(rows, schema={"task": pl.String, "tokens": pl.Int64, "token_agreement": pl.Float64})
    joined = table.join(extra, on="task", how="left", maintain_order="left")
    means = (joined.filter(pl.col("task") != "Average").group_by("family")
             .agg(pl.col("token_agreement").mean().alias("_mean"), pl.col("tokens").sum().alias("_tokens")))
    joined = joined.join(means, on="family", how="left", maintain_order="left")
    average = pl.col("task") == "Average"
    return joined.with_columns(
        pl.when(average).then(pl.col("_mean")).otherwise(pl.col("token_agreement")).alias("token_agreement"),
        pl.when(average).then(pl.col("_tokens")).otherwise(pl.col("tokens")).alias("tokens"),
    ).drop("_mean", "_tokens")
