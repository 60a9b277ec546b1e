"""Training from a teacher cache: with k = V it equals training with the live teacher, the teacher model
is never loaded, resume stays bit-exact, a cache that does not fit the run is a clear error, and every
KD run logs token-level agreement and entropies that match a plain-PyTorch computation.
Run: ``python -m pytest tests/train/test_train_from_cache.py -q``."""

import json

import pytest
import torch

from kdlens.errors import KdlensError
from kdlens.train import Trainer, train
from kdlens.train.teacher_cache import TeacherCacheConfig, build_cache

VOCAB = 300  # the synthetic task's tokenizer (tests/train/conftest.py)


@pytest.fixture(scope="module")
def full_cache(task_dir, teacher_dir, tmp_path_factory):
    """k = V, fp32 logits: the whole teacher distribution, at T = 1 and 2."""
    out = tmp_path_factory.mktemp("cache_full")
    build_cache(TeacherCacheConfig(out_dir=str(out), data=str(task_dir / "train.json"), teacher=str(teacher_dir),
                                   tokenizer=str(task_dir / "tokenizer"), k=VOCAB, temperatures=(1.0, 2.0),
                                   logits_dtype="float32", max_length=96, progress=False))
    return out


def _weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.student.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("objective,norm,impl", [("forward_kl", "global_tokens", "reference"),
                                                 ("reverse_kl", "paper", "reference"),
                                                 ("jsd", "global_tokens", "reference"),
                                                 ("forward_kl", "paper", "chunked"),
                                                 ("jsd", "paper", "chunked"),
                                                 ("reverse_kl", "paper", "chunked+noise")])
def test_cache_with_k_equal_v_trains_like_the_live_teacher(base_cfg, task_dir, teacher_dir, full_cache, tmp_path,
                                                           objective, norm, impl):
    impl, _, noise = impl.partition("+")
    kw = dict(mode="kd", objective=objective, temperature=2.0, loss_normalization=norm,
              loss_implementation=impl, max_steps=3, val_size=16, noise_sigma=5.0 if noise else 0.0)
    live = Trainer(base_cfg(task_dir, tmp_path / "live", teacher=str(teacher_dir), **kw))
    cached = Trainer(base_cfg(task_dir, tmp_path / "cached", teacher_cache=str(full_cache), **kw))
    assert cached.teacher is None and cached.teacher_fn is None  # never loaded
    for step in (1, 2, 3):
        a, b = live.compute_step(step), cached.compute_step(step)
        assert b["kd"] == pytest.approx(a["kd"], rel=1e-5)
        for key in ("token_agreement", "teacher_entropy", "student_entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
        ga = {n: p.grad for n, p in live.student.named_parameters() if p.grad is not None}
        gb = {n: p.grad for n, p in cached.student.named_parameters() if p.grad is not None}
        assert ga.keys() == gb.keys() and ga
        for n in ga:
            torch.testing.assert_close(gb[n], ga[n], atol=1e-6, rtol=1e-4)
        for t in (live, cached):
            t.optimizer.step()
            t.scheduler.step()
            t.optimizer.zero_grad(set_to_none=True)
    wa, wb = _weights(live), _weights(cached)
    for n in wa:  # Adam divides by sqrt(v): near-0 gradients turn 1e-9 differences into ~lr/30 (lr=3e-3)
        torch.testing.assert_close(wb[n], wa[n], atol=1e-4, rtol=1e-4)


def test_token_stats_in_the_step_match_plain_torch(base_cfg, task_dir, teacher_dir, tmp_path):
    cfg = base_cfg(task_dir, tmp_path / "r", mode="kd", teacher=str(teacher_dir), temperature=2.0,
                   micro_batch_size=3, grad_accum=2, loss_implementation="reference")
    trainer = Trainer(cfg)
    stats = trainer.compute_step(1)
    from kdlens.data.collate import collate

    agree = h_t = h_s = n = 0.0
    for idx in trainer.rank_micro_batches(1):
        batch = collate([trainer.train_examples[i] for i in idx], trainer.tokenizer.pad_token_id)
        with torch.no_grad():
            zs = trainer.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            zt = trainer.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        m = batch["attention_mask"].bool()
        agree += float((zs.argmax(-1) == zt.argmax(-1))[m].sum())
        p, q = torch.softmax(zt / 2.0, -1), torch.softmax(zs / 2.0, -1)
        h_t += float((-(p * p.log()).sum(-1))[m].sum())
        h_s += float((-(q * q.log()).sum(-1))[m].sum())
        n += float(m.sum())
    assert stats["token_agreement"] == pytest.approx(agree / n, abs=1e-9)
    assert stats["teacher_entropy"] == pytest.approx(h_t / n, rel=1e-5)
    assert stats["student_entropy"] == pytest.approx(h_s / n, rel=1e-5)


def test_metrics_log_token_stats_and_resume_from_a_cache_is_bit_exact(base_cfg, task_dir, full_cache, tmp_path):
    kw = dict(mode="kd", teacher_cache=str(full_cache), temperature=1.0, student="tiny:tiny-s2", lora=True,
              lora_dropout=0.1, max_steps=4, save_every=2, loss_implementation="reference", noise_sigma=0.3)
    full = train(base_cfg(task_dir, tmp_path / "full", **kw))
    part = train(base_cfg(task_dir, tmp_path / "part", stop_after_steps=3, **kw))
    assert full.status == "complete" and part.status == "stopped"
    resumed = train(base_cfg(task_dir, tmp_path / "part", resume=True, **kw))
    assert resumed.status == "complete" and resumed.steps == 4
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(p):
        return [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]

    steps = [r for r in rows(tmp_path / "full") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert 0.0 <= r["token_agreement"] <= 1.0 and r["teacher_entropy"] > 0 and r["student_entropy"] > 0
    keys = ("step", "loss", "val_ce", "token_agreement", "teacher_entropy", "student_entropy")
    assert ([tuple(r.get(k) for k in keys) for r in rows(tmp_path / "full")]
            == [tuple(r.get(k) for k in keys) for r in rows(tmp_path / "part")])


def test_sft_logs_no_token_stats(base_cfg, task_dir, tmp_path):
    train(base_cfg(task_dir, tmp_path / "r", max_steps=1))
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss" in row and "token_agreement" not in row


def test_a_cache_that_does_not_fit_the_run_is_a_clear_error(base_cfg, task_dir, teacher_dir, full_cache, tmp_path):
    kw = dict(mode="kd", teacher_cache=str(full_cache), loss_implementation="reference")
    cases = [
        (dict(temperature=3.0), r"temperatures \[1.0, 2.0\], not T=3"),
        (dict(max_length=64), "encoding"),
        (dict(template="alpaca-paper"), "encoding"),
        (dict(teacher=str(tmp_path)), "teacher"),
        (dict(teacher_cache=str(tmp_path / "nowhere")), "not a folder"),
        (dict(teacher_cache=str(tmp_path)), "no cache.json"),
    ]
    for extra, message in cases:
        with pytest.raises(KdlensError, match=message):
            Trainer(base_cfg(task_dir, tmp_path / "r", **{**kw, **extra}))
    other = tmp_path / "other.json"  # the same records, one changed: another data file
    records = json.loads((task_dir / "train.json").read_text())
    records[0]["output"] += " x"
    other.write_text(json.dumps(records))
    with pytest.raises(KdlensError, match="data .*sha256"):
        Trainer(base_cfg(task_dir, tmp_path / "r", **{**kw, "data": str(other)}))
    for extra, message in [(dict(onpolicy_lambda=0.5), "on-policy"), (dict(objective="tvd"), "objective"),
                           (dict(mode="sft"), "mode='sft'")]:
        with pytest.raises(KdlensError, match=message):
            base_cfg(task_dir, tmp_path / "r", **{**kw, **extra})


def test_train_cli_with_a_teacher_cache(task_dir, full_cache, tmp_path, capsys):
    from kdlens.cli import main

    out = tmp_path / "run"
    args = ["train", f"out_dir={out}", f"data={task_dir / 'train.json'}", f"tokenizer={task_dir / 'tokenizer'}",
            "student='tiny:tiny-s1'", "mode='kd'", f"teacher_cache='{full_cache}'", "max_steps=2", "val_size=16",
            "max_length=96", "micro_batch_size=2", "grad_accum=1", "progress=false", "lora=false",
            "loss_implementation='reference'"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "complete"
    assert main([*args[:1], f"out_dir={tmp_path / 'run2'}", *args[2:], "temperature=5.0"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kdlens")]
    assert len(err) == 1 and err[0].startswith("kdlens: error: the teacher cache") and "T=5" in err[0]


@pytest.mark.parametrize("tail", ["rest", "renormalize"])
def test_a_top_k_bf16_cache_trains_with_either_tail(base_cfg, task_dir, teacher_dir, tmp_path, tail):
    out = tmp_path / "cache"
    # max_length 256: the examples have 177..231 tokens, so the batches hold padded (masked) positions
    build_cache(TeacherCacheConfig(out_dir=str(out), data=str(task_dir / "train.json"), teacher=str(teacher_dir),
                                   tokenizer=str(task_dir / "tokenizer"), k=16, max_length=256, progress=False))
    res = train(base_cfg(task_dir, tmp_path / "r", mode="kd", teacher_cache=str(out), cache_tail=tail,
                         temperature=1.0, max_steps=2, max_length=256))
    assert res.status == "complete" and res.train_loss > 0
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["token_agreement"] <= 1.0 for r in rows if "loss" in r)
