"""Fixtures for the evaluation tests: a tiny random Qwen2 model and a locally trained tokenizer.

Both are built once per session from a config (no download) and saved to a temporary folder, the
form ``kdlens evaluate --model DIR`` reads.
"""

import pytest


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """(model, tokenizer, folder): a ~0.1M-parameter Qwen2 with fairly peaked random logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from kdlens.data.synthetic import make_task, train_tokenizer
    from kdlens.models import tiny_config

    task = make_task(seed=0, n_train=200, n_test=0)
    tok = train_tokenizer(task.texts(), vocab_size=320)
    config = tiny_config("tiny-s1", len(tok), eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    # A larger init than the default 0.02 spreads the logits, so greedy picks are far from ties.
    config.initializer_range = 0.15
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config).eval()
    folder = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok, folder
