"""The teacher cache: its values against the teacher's own full logits (plain PyTorch / transformers),
the manifest checks, and an interrupted build that continues to the same bytes.
Run: ``python -m pytest tests/train/test_teacher_cache.py -q``."""

import json

import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.train.teacher_cache import MANIFEST, TeacherCache, TeacherCacheConfig, build_cache


def cache_cfg(task_dir, teacher_dir, out, **kw):
    args = dict(out_dir=str(out), data=str(task_dir / "train.json"), teacher=str(teacher_dir),
                tokenizer=str(task_dir / "tokenizer"), k=16, temperatures=(1.0, 2.0), max_length=96,
                batch_size=5, row_chunk=37, shard_tokens=2000, progress=False)
    args.update(kw)
    return TeacherCacheConfig(**args)


def _examples(task_dir, n):
    from kdlens.data.collate import encode_records
    from kdlens.data.prompts import get_template
    from kdlens.models import load_tokenizer

    tok = load_tokenizer(task_dir / "tokenizer")
    records = json.loads((task_dir / "train.json").read_text())[:n]
    return encode_records(records, tok, get_template("alpaca"), max_length=96)


@pytest.mark.parametrize("logits_dtype", ["float32", "bfloat16"])
def test_cached_values_equal_the_teachers_full_logits(task_dir, teacher_dir, tmp_path, logits_dtype):
    result = build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "c", logits_dtype=logits_dtype, shard_tokens=500,
                                   max_records=12))
    assert result.complete and result.examples == 12 and result.shards >= 2
    cache = TeacherCache(tmp_path / "c")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    for ex in _examples(task_dir, 12)[::5]:
        with torch.no_grad():  # the independent reference: one sequence, no padding, the HF forward
            z = model(input_ids=torch.tensor([ex.input_ids])).logits[0].float()
        ids, vals, lse = (t.float() if t.is_floating_point() else t for t in cache.rows(ex.input_ids))
        assert ids.dtype == torch.int32 and ids.shape == (len(ex.input_ids), 16)
        ref_vals, _ = torch.topk(z, 16, dim=-1)
        tol = dict(atol=1e-4, rtol=1e-5) if logits_dtype == "float32" else dict(atol=0.0, rtol=2**-8)
        torch.testing.assert_close(vals, ref_vals, **tol)  # descending top-k values
        # the cached ids index the same logits (ties may order ids differently, values may not)
        torch.testing.assert_close(z.gather(-1, ids.long()), ref_vals, atol=1e-4, rtol=1e-5)
        for j, t in enumerate((1.0, 2.0)):
            torch.testing.assert_close(lse[:, j], torch.logsumexp(z / t, -1), atol=1e-4, rtol=1e-5)


def test_interrupted_build_continues_to_the_same_bytes(task_dir, teacher_dir, tmp_path):
    kw = dict(max_records=40, shard_tokens=1000)
    full = build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "full", **kw))
    part = build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "part", stop_after_shards=1, **kw))
    assert not part.complete and part.shards == 1 and full.shards > 2
    with pytest.raises(KdlensError, match="incomplete"):
        TeacherCache(tmp_path / "part")
    # as if killed after the next shard was renamed into place but before the manifest named it
    (tmp_path / "part" / "shard-00001.safetensors").write_bytes(b"half")
    (tmp_path / "part" / ".shard-00002.safetensors.999999.x.tmp").write_bytes(b"dead")
    with pytest.raises(KdlensError, match="different config"):
        build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "part", k=8, **kw))
    done = build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "part", **kw))
    assert done.complete and done.shards == full.shards and done.tokens == full.tokens
    for i in range(full.shards):
        name = f"shard-{i:05d}.safetensors"
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "part" / name).read_bytes(), name
    a = json.loads((tmp_path / "full" / MANIFEST).read_text())
    b = json.loads((tmp_path / "part" / MANIFEST).read_text())
    assert a == b
    assert len(TeacherCache(tmp_path / "part")) == done.examples == full.examples


def test_cli_builds_a_cache_and_bad_input_is_one_line(task_dir, teacher_dir, tmp_path, capsys):
    from kdlens.cli import main

    out = tmp_path / "c"
    args = ["teacher-cache", f"out_dir={out}", f"data={task_dir / 'train.json'}", f"teacher={teacher_dir}",
            f"tokenizer={task_dir / 'tokenizer'}", "k=4", "temperatures=[1.0]", "max_records=3",
            "max_length=96", "progress=false"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["complete"] and printed["examples"] == 3 and printed["bytes"] > 0
    assert main([*args[:-4], "k=100000", "max_records=3", "max_length=96", "progress=false"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kdlens")]
    assert len(err) == 1 and err[0].startswith("kdlens: error: ") and "k=100000" in err[0]
    assert main([*args[:-1], "temperatures=[]"]) == 2
    assert "temperatures" in capsys.readouterr().err


def test_a_full_vocabulary_cache_reads_as_the_teachers_dense_logits(task_dir, teacher_dir, tmp_path):
    """k = V: dense_logits() gives the teacher's own logits in vocabulary order (checked against a forward
    of the teacher model), zeros past each example's end; a top-k cache refuses it."""
    from transformers import AutoModelForCausalLM

    build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "full", k=300, logits_dtype="float32", max_records=3))
    cache = TeacherCache(tmp_path / "full")
    assert cache.full_vocabulary
    examples = _examples(task_dir, 3)
    length = max(len(e.input_ids) for e in examples) + 4
    dense = cache.dense_logits(examples, length)
    assert dense.shape == (3, length, 300) and dense.dtype == torch.float32
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        with torch.no_grad():
            want = teacher(input_ids=torch.tensor([e.input_ids])).logits[0].float()
        torch.testing.assert_close(dense[i, :n], want, atol=1e-4, rtol=1e-4)
        assert not dense[i, n:].any()
    build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "top", max_records=3))
    top = TeacherCache(tmp_path / "top")
    assert not top.full_vocabulary
    with pytest.raises(KdlensError, match="top 16 of 300"):
        top.dense_logits(examples, length)


def test_lookup_pads_and_refuses_unknown_examples(task_dir, teacher_dir, tmp_path):
    build_cache(cache_cfg(task_dir, teacher_dir, tmp_path / "c", max_records=4))
    cache = TeacherCache(tmp_path / "c")
    examples = _examples(task_dir, 4)
    length = max(len(e.input_ids) for e in examples) + 5
    ids, logits, lse = cache.lookup(examples, length)
    assert ids.shape == (4, length, 16) and lse.shape == (4, length, 2)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        assert torch.equal(ids[i, :n], cache.rows(e.input_ids)[0].long())
        assert torch.equal(ids[i, n:], torch.arange(16).expand(length - n, 16))  # distinct ids, uniform
        assert not logits[i, n:].any() and torch.allclose(lse[i, n:], torch.tensor(300.0).log())
    with pytest.raises(KdlensError, match="not in the teacher cache"):
        cache.rows([5, 6, 7])
    with pytest.raises(KdlensError, match="T=3"):
        cache.temperature_index(3.0)
