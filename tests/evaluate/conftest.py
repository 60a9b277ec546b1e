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


PROMPTS = [
    "Tom has 3 apples.",
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\nAna has 12 pens and gives 5 to Li. How many are left?\n\n"
    "### Response:\n",
    "x",
    "How many coins does Sara have in 4 boxes with 7 coins each?",
    "1 2 3 4 5 6 7 8 9",
    "The answer is",
    "Omar shares 36 cards equally among 4 friends.",
    "Zoe",
    "Mia has 60 eggs, loses 35 of them, and then finds 29 more.",
    "Ravi buys 3 packs with 9 balls in each.",
    "### Instruction:\nadd 2 and 2\n\n### Response:\n",
    "Lena has 48 stamps.",
    "Ida has 5 jars.",
    "Ben gives Max 7 more toys. How many toys does Max have now? Max starts with",
    "cups cups cups",
    "Tom and Ana put 20 shells together and split them into 5 bags.",
    "Sara",
    "What is 9 * 8?",
]
