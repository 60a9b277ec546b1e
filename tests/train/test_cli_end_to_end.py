"""End to end from the command line on CPU: write the synthetic task, SFT a tiny teacher, then KD a tiny
student from it with each of the paper's presets (seqkd, revkd, gkd); every run leaves a result.json,
finite decreasing/positive losses in metrics.jsonl, and a final/ that kdlens.models.load_causal_lm loads.

Every command goes through ``kdlens.cli.main`` in this process (the same parser, presets, TOML and
override handling as the console script, without a Python + torch start-up per run; the console
entry point itself runs in tests/train/test_distributed.py).
Run: ``python -m pytest tests/train/test_cli_end_to_end.py -q``.
"""

import json

import pytest
import torch

COMMON_TOML = """
warmup_steps = 1
val_size = 8
max_length = 96
micro_batch_size = 2
grad_accum = 2
progress = false
"""


def _cli(*argv):
    from kdlens.cli import main

    rc = main(["train", *argv])
    assert rc == 0, argv


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cli_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    _cli("--synthetic-task", str(root / "task"), "--synthetic-train", "120", "--synthetic-test", "10")
    assert len(json.loads((root / "task" / "train.json").read_text())) == 120
    assert (root / "task" / "test.json").is_file() and (root / "task" / "tokenizer").is_dir()
    (root / "common.toml").write_text(COMMON_TOML + f'data = "{root / "task" / "train.json"}"\n'
                                      f'tokenizer = "{root / "task" / "tokenizer"}"\n')
    return root


@pytest.fixture(scope="module")
def sft_teacher(cli_task):
    out = cli_task / "teacher"
    _cli("--preset", "sft", "--config", str(cli_task / "common.toml"), f"out_dir={out}",
         "student=tiny:tiny-s2", "lora=false", "max_steps=6", "lr=3e-3", "grad_accum=1", "micro_batch_size=4")
    return out


def test_sft_teacher_from_the_cli(sft_teacher):
    from kdlens.models import load_causal_lm

    result = json.loads((sft_teacher / "result.json").read_text())
    assert result["status"] == "complete" and result["mode"] == "sft" and result["steps"] == 6
    assert result["config"]["lora"] is False and result["config"]["warmup_steps"] == 1  # TOML + override
    losses = [r["loss"] for r in _rows(sft_teacher) if "loss" in r]
    assert len(losses) == 6 and all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5  # from ~ln(vocab) at random init; lr 3e-3 learns quickly
    model = load_causal_lm(sft_teacher / "final")
    assert sum(p.numel() for p in model.parameters()) == round(result["student_size_b"] * 1e9)


@pytest.mark.parametrize("preset,objective,temperature,on_policy", [
    ("seqkd", "forward_kl", 2.0, 0.0), ("revkd", "reverse_kl", 1.0, 0.0), ("gkd", "jsd", 1.0, 0.5)])
def test_kd_presets_from_the_cli(cli_task, sft_teacher, preset, objective, temperature, on_policy):
    from kdlens.models import load_causal_lm

    out = cli_task / f"kd-{preset}"
    _cli("--preset", preset, "--config", str(cli_task / "common.toml"), f"out_dir={out}", "student=tiny:tiny-s1",
         f"teacher={sft_teacher / 'final'}", "max_steps=3")
    result = json.loads((out / "result.json").read_text())
    assert (result["status"], result["mode"], result["objective"], result["steps"]) == ("complete", "kd", objective, 3)
    cfg = result["config"]
    assert (cfg["temperature"], cfg["onpolicy_lambda"], cfg["lora"], cfg["lora_r"]) == (temperature, on_policy, True, 8)
    rows = [r for r in _rows(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["kd_loss"] > 0 and r["ce"] == 0.0 for r in rows)
    assert result["final_val_ce"] is not None and torch.isfinite(torch.tensor(result["final_val_ce"]))
    # the LoRA adapter in final/ loads on the run's saved tiny base and changes its outputs
    base = load_causal_lm(out / "base")
    tuned = load_causal_lm(out / "base", adapter=out / "final")
    assert any("lora" in n for n, _ in tuned.named_parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.equal(base(input_ids=ids).logits, tuned(input_ids=ids).logits)
