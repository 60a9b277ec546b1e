"""Shared fixtures of the training tests: a small synthetic task folder and tiny saved models."""

import pytest


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory):
    from kdlens.data.synthetic import make_task, write_task

    root = tmp_path_factory.mktemp("task")
    write_task(root, make_task(seed=0, n_train=160, n_test=20, levels=(1,)), vocab_size=300)
    return root


@pytest.fixture(scope="session")
def teacher_dir(task_dir, tmp_path_factory):
    """A tiny (random) teacher saved with the task's tokenizer."""
    from kdlens.models import load_tokenizer, make_tiny_model

    tok = load_tokenizer(task_dir / "tokenizer")
    path = tmp_path_factory.mktemp("teacher")
    make_tiny_model("tiny-s2", tok, seed=11).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def base_cfg():
    """A factory of small TrainConfigs: ``base_cfg(task_dir, out_dir, **overrides)``."""
    return make_cfg


def make_cfg(task_dir, out_dir, **kw):
    from kdlens.train import TrainConfig

    args = dict(out_dir=str(out_dir), data=str(task_dir / "train.json"), tokenizer=str(task_dir / "tokenizer"),
                student="tiny:tiny-s1", lora=False, max_steps=3, micro_batch_size=4, grad_accum=2,
                val_size=16, warmup_steps=1, lr=3e-3, max_length=96, progress=False)
    args.update(kw)
    return TrainConfig(**args)
