"""Distributed and process-level tests: DDP with gloo (2 processes == 1 process with the same global
batch), a run killed with SIGKILL that resumes bit-exactly, the compiled path, and the CLI.
Run: ``python -m pytest tests/train/test_distributed.py -q``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _weights(run):
    return load_file(str(Path(run) / "final" / "model.safetensors"))


def _args(task_dir, out, *extra):
    return [f"out_dir={out}", f"data={task_dir / 'train.json'}", f"tokenizer={task_dir / 'tokenizer'}",
            "student=tiny:tiny-s1", "lora=false", "max_steps=3", "val_size=16", "warmup_steps=1", "lr=3e-3",
            "max_length=96", "progress=false", *extra]


def test_ddp_two_processes_equal_one_process(task_dir, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "kdlens", "train",
                    *_args(task_dir, one, "micro_batch_size=2", "grad_accum=4")],
                   check=True, env=_env(), cwd=tmp_path, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29517", "-m", "kdlens", "train",
                           *_args(task_dir, two, "micro_batch_size=2", "grad_accum=2")],
                          env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    la = [json.loads(x)["loss"] for x in (one / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    lb = [json.loads(x)["loss"] for x in (two / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert la == pytest.approx(lb, rel=1e-6)
    assert json.loads((two / "result.json").read_text())["tokens"] == json.loads((one / "result.json").read_text())["tokens"]


def test_sigkill_mid_run_then_resume_equals_uninterrupted(task_dir, tmp_path):
    common = ["max_steps=6", "save_every=1", "micro_batch_size=4", "grad_accum=1"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-m", "kdlens", "train", *_args(task_dir, full, *common)],
                   check=True, env=_env(), cwd=tmp_path, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kdlens", "train", *_args(task_dir, killed, *common)],
                            env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step-3" / "state.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, "-m", "kdlens", "train", *_args(task_dir, killed, *common, "resume=true")],
                   check=True, env=_env(), cwd=tmp_path, capture_output=True)
    a, b = _weights(full), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compiled_kd_step_matches_eager_and_does_not_recompile(task_dir, teacher_dir, tmp_path, base_cfg):
    """The compiled path (student forward+backward, teacher forward, the loss's element-wise step)
    gives the eager step's loss and gradients, and later steps with other sequence lengths and
    position counts reuse the compiled graphs (a recompile per batch shape made it 5x slower)."""
    import torch._dynamo

    from kdlens.train import Trainer

    # max_length 200 cuts some examples (177-231 tokens) and not others: batches of 2 have varying lengths
    kw = dict(micro_batch_size=2, grad_accum=1, max_length=200, mode="kd", teacher=str(teacher_dir),
              objective="forward_kl", temperature=2.0, loss_implementation="chunked")
    eager = Trainer(base_cfg(task_dir, tmp_path / "e", **kw))
    compiled = Trainer(base_cfg(task_dir, tmp_path / "c", compile=True, **kw))
    se, sc = eager.compute_step(1), compiled.compute_step(1)
    assert sc["kd"] == pytest.approx(se["kd"], rel=1e-4)
    ge = {n: p.grad for n, p in eager.student.named_parameters()}
    for n, p in compiled.student.named_parameters():
        assert torch.allclose(p.grad, ge[n], atol=1e-5, rtol=1e-3), n
    from kdlens.data.collate import collate

    shapes = {tuple(collate([compiled.train_examples[i] for i in compiled.step_indices(k)], 1,
                            pad_to_multiple_of=8)["input_ids"].shape) for k in (2, 3, 4)}
    assert shapes - {tuple(collate([compiled.train_examples[i] for i in compiled.step_indices(1)], 1,
                                   pad_to_multiple_of=8)["input_ids"].shape)}, "later steps must see new shapes"
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in (2, 3, 4):
            compiled.optimizer.zero_grad(set_to_none=True)
            eager.optimizer.zero_grad(set_to_none=True)
            assert compiled.compute_step(step)["kd"] == pytest.approx(eager.compute_step(step)["kd"], rel=1e-4)


def test_cli_bad_input_exits_2_with_message(task_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdlens", "train", *_args(task_dir, tmp_path / "x", "lr=fast")],
                          env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "lr" in proc.stderr and "Traceback" not in proc.stderr
