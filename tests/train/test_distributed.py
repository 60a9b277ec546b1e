"""Distributed and process-level tests: DDP and FSDP2 with gloo (2 processes == 1 process with the same
global batch; FSDP2 also stopped and resumed), a run killed with SIGKILL that resumes bit-exactly, the
compiled path, and the CLI.
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


def _torchrun(tmp_path, *args, port):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", "-m", "kdlens", "train", *args],
                          env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.fixture(scope="module")
def one_process_run(task_dir, tmp_path_factory):
    """The reference of the distributed tests: one process, global batch 8 = 2 x 4 accumulation."""
    one = tmp_path_factory.mktemp("dist") / "one"
    subprocess.run([sys.executable, "-m", "kdlens", "train",
                    *_args(task_dir, one, "micro_batch_size=2", "grad_accum=4")],
                   check=True, env=_env(), cwd=one.parent, capture_output=True)
    return one


def _assert_same_run(one, run):
    a, b = _weights(one), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    assert _losses(run) == pytest.approx(_losses(one), rel=1e-6)
    assert json.loads((run / "result.json").read_text())["tokens"] == json.loads((one / "result.json").read_text())["tokens"]


def test_ddp_two_processes_equal_one_process(task_dir, tmp_path, one_process_run):
    """Same global batch (8 = 2 processes x 2 x 2 accumulation): DDP with gloo gives the one-process run."""
    _torchrun(tmp_path, *_args(task_dir, tmp_path / "ddp", "micro_batch_size=2", "grad_accum=2"), port=29517)
    _assert_same_run(one_process_run, tmp_path / "ddp")


def test_fsdp_two_processes_stopped_and_resumed_equal_one_process(task_dir, tmp_path, one_process_run):
    """FSDP2 (fully_shard, gloo) gives the one-process run; it is stopped after step 2 and resumed, so the
    sharded checkpoint (gathered weights and optimizer state, re-sharded on load) is exercised too."""
    fsdp = tmp_path / "fsdp"
    fsdp_args = _args(task_dir, fsdp, "micro_batch_size=2", "grad_accum=2", "distributed=fsdp")
    _torchrun(tmp_path, *fsdp_args, "stop_after_steps=2", port=29518)
    assert not (fsdp / "result.json").exists() and (fsdp / "checkpoints" / "step-2" / "state.json").exists()
    _torchrun(tmp_path, *fsdp_args, "resume=true", port=29519)
    _assert_same_run(one_process_run, fsdp)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(task_dir, tmp_path, one_process_run):
    """A run killed with SIGKILL after its step-1 checkpoint, then resumed, ends bit-exactly where the
    uninterrupted one-process run ended (save_every and resume do not change the result)."""
    args = _args(task_dir, tmp_path / "killed", "micro_batch_size=2", "grad_accum=4", "save_every=1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kdlens", "train", *args],
                            env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step-1" / "state.json").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, "-m", "kdlens", "train", *args, "resume=true"],
                   check=True, env=_env(), cwd=tmp_path, capture_output=True)
    a, b = _weights(one_process_run), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(killed) == _losses(one_process_run)


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


def test_cli_bad_input_exits_2_with_message(task_dir, tmp_path, capsys):
    from kdlens.cli import main

    assert main(["train", *_args(task_dir, tmp_path / "x", "lr=fast")]) == 2
    err = capsys.readouterr().err
    assert "'lr' must be a number" in err and "Traceback" not in err
