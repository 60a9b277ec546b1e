"""Batched generation (kdlens.eval.decode) against plain transformers/PyTorch references.

References: ``model.generate`` one prompt at a time (greedy), a cache-free loop that re-runs the
full sequence each step and samples with ``torch.multinomial`` (sampling), and
the definitions of top-k and nucleus filtering in numpy (filtering; the code uses transformers' warpers).
"""

import numpy as np
import pytest
import torch

from eval_fixtures import PROMPTS
from kdlens.errors import KdlensError
from kdlens.eval.decode import Decoding, filter_logits, generate, item_seed

NEW = 24


def _hf_greedy(model, tok, prompt, max_new):
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_greedy_matches_model_generate_and_is_batch_size_invariant(tiny_lm):
    model, tok, _ = tiny_lm
    by_batch = {}
    for bs in (1, 4, 16):
        gens = generate(model, tok, PROMPTS, Decoding(max_new_tokens=NEW, stop_strings=(), batch_size=bs),
                        eos_token_ids=[])
        by_batch[bs] = [g.token_ids for g in gens]
        assert all(len(t) == NEW and g.stop_reason == "length" for t, g in zip(by_batch[bs], gens))
    assert by_batch[1] == by_batch[4] == by_batch[16]
    reference = [_hf_greedy(model, tok, p, NEW) for p in PROMPTS]
    assert by_batch[16] == reference
    assert len({tuple(t) for t in reference}) > 3  # the outputs differ between prompts
    texts = generate(model, tok, PROMPTS[:3], Decoding(max_new_tokens=NEW, stop_strings=()),
                     eos_token_ids=[])
    assert [g.text for g in texts] == [tok.decode(r) for r in reference[:3]]
    assert [g.prompt_tokens for g in texts] == [len(tok(p)["input_ids"]) for p in PROMPTS[:3]]


def _reference_sample(model, tok, prompt, seed, key, max_new, temperature, top_k, top_p):
    """No KV cache, one row: re-run the whole sequence every step and sample with one generator."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    ids = tok(prompt, return_tensors="pt")["input_ids"]
    gen = torch.Generator().manual_seed(item_seed(seed, key))
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=ids).logits[:, -1, :].float() / temperature
            if top_k:
                logits = TopKLogitsWarper(top_k)(ids, logits)
            if top_p < 1:
                logits = TopPLogitsWarper(top_p)(ids, logits)
            token = torch.multinomial(logits.softmax(-1)[0], 1, generator=gen)
            out.append(int(token))
            ids = torch.cat([ids, token[None]], dim=1)
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 0.9)])
def test_sampling_matches_cache_free_reference(tiny_lm, temperature, top_k, top_p):
    model, tok, _ = tiny_lm
    prompts = PROMPTS[:6]
    dec = Decoding(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                   max_new_tokens=12, stop_strings=(), batch_size=4, seeds=(6,))
    keys = [f"t/{i}" for i in range(len(prompts))]
    gens = generate(model, tok, prompts, dec, keys=keys, eos_token_ids=[])
    for p, k, g in zip(prompts, keys, gens):
        assert g.token_ids == _reference_sample(model, tok, p, 6, k, 12, temperature, top_k, top_p)


def test_sampling_reproducible_per_seed_and_batch_size(tiny_lm):
    model, tok, _ = tiny_lm

    def run(seed, bs):
        dec = Decoding(do_sample=True, max_new_tokens=16, stop_strings=(), batch_size=bs, seeds=(seed,))
        return [g.token_ids for g in generate(model, tok, PROMPTS, dec, eos_token_ids=[])]

    first = run(6, 4)
    assert run(6, 4) == first
    assert run(6, 16) == first  # per-item generators: the batch layout does not matter
    assert run(7, 4) != first


def _reference_filter(row, top_k, top_p):
    """Top-k then nucleus on one row, from their definitions (numpy float64, plain loop): keep the
    tokens at least as large as the k-th largest; then, from the least likely up, drop tokens while
    the dropped mass stays <= 1 - top_p, never the most likely one."""
    row = np.asarray(row, dtype=np.float64)
    keep = np.ones(row.size, dtype=bool)
    if top_k:
        keep &= row >= np.sort(row)[-top_k]
    if top_p < 1.0:
        z = np.where(keep, row, -np.inf)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        dropped = 0.0
        for j in np.argsort(probs)[:-1]:
            dropped += probs[j]
            if dropped > 1.0 - top_p:
                break
            keep[j] = False
    return keep


def test_filter_logits_keeps_the_top_k_and_the_nucleus():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 97, generator=gen) * 3
    tied = logits.clone()
    tied[0, :5] = 10.0  # ties at the top: top-k keeps every tied token
    for k in (1, 5, 50, 97):
        out = filter_logits(tied, top_k=k)
        for r in range(tied.shape[0]):
            keep = _reference_filter(tied[r].numpy(), k, 1.0)
            assert np.array_equal(torch.isfinite(out[r]).numpy(), keep)
            assert torch.equal(out[r][torch.isfinite(out[r])], tied[r][torch.from_numpy(keep)])
    for k, p in ((0, 0.05), (0, 0.5), (0, 0.9), (0, 0.999), (20, 0.9)):
        out = filter_logits(logits, top_k=k, top_p=p)
        for r in range(logits.shape[0]):
            assert np.array_equal(torch.isfinite(out[r]).numpy(), _reference_filter(logits[r].numpy(), k, p)), (k, p, r)
    assert torch.equal(filter_logits(logits), logits)


def test_stops_at_eos_and_at_stop_string(tiny_lm):
    model, tok, _ = tiny_lm
    prompt = PROMPTS[1]
    free = generate(model, tok, [prompt], Decoding(max_new_tokens=NEW, stop_strings=()), eos_token_ids=[])[0]
    # Treat the 6th generated token as EOS: generation ends right there, EOS is not in the text.
    eos = free.token_ids[5]
    cut = free.token_ids.index(eos)
    g = generate(model, tok, [prompt], Decoding(max_new_tokens=NEW, stop_strings=()), eos_token_ids=[eos])[0]
    assert g.stop_reason == "eos" and g.token_ids == free.token_ids[:cut + 1]
    assert g.text == tok.decode(free.token_ids[:cut])
    # A stop string taken from the middle of the free continuation ends generation once it appears.
    text = free.text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip()
    s = generate(model, tok, [prompt], Decoding(max_new_tokens=NEW, stop_strings=(stop,)), eos_token_ids=[])[0]
    assert s.stop_reason == "stop" and stop in s.text
    assert s.token_ids == free.token_ids[:len(s.token_ids)]
    assert stop not in tok.decode(s.token_ids[:-1])  # it stopped at the first token completing it
    # In a batch, a row that stops early does not change the others.
    batch = generate(model, tok, [prompt] + PROMPTS[2:6], Decoding(max_new_tokens=NEW, stop_strings=(stop,)),
                     eos_token_ids=[])
    alone = [generate(model, tok, [p], Decoding(max_new_tokens=NEW, stop_strings=(stop,)), eos_token_ids=[])[0]
             for p in [prompt] + PROMPTS[2:6]]
    assert [b.token_ids for b in batch] == [a.token_ids for a in alone]


def test_decoding_validation():
    with pytest.raises(KdlensError, match="several seeds"):
        Decoding(seeds=(1, 2))
    with pytest.raises(KdlensError, match="temperature"):
        Decoding(do_sample=True, temperature=0)
    with pytest.raises(KdlensError, match="top_p"):
        Decoding(do_sample=True, top_p=0)
    with pytest.raises(KdlensError, match="max_new_tokens"):
        Decoding(max_new_tokens=0)
    assert Decoding(do_sample=True, seeds=(1, 2)).seeds == (1, 2)


def test_lora_adapter_model_generates_like_merged_weights(tiny_lm, tmp_path):
    """A peft LoRA model goes through the same loop; its greedy output equals the merged model's."""
    import copy

    from peft import LoraConfig, get_peft_model

    from kdlens.models import load_causal_lm

    model, tok, folder = tiny_lm
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_causal_lm(folder, adapter=tmp_path / "adapter")
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    dec = Decoding(max_new_tokens=12, stop_strings=(), batch_size=4)
    with_adapter = [g.token_ids for g in generate(loaded, tok, PROMPTS[:8], dec, eos_token_ids=[])]
    assert with_adapter == [_hf_greedy(merged, tok, p, 12) for p in PROMPTS[:8]]
    assert with_adapter != [g.token_ids for g in generate(model, tok, PROMPTS[:8], dec, eos_token_ids=[])]
    # The same adapter through evaluate(): loaded from folders, named after the adapter folder.
    from kdlens.eval.run import evaluate

    res = evaluate(str(folder), "synthetic", tmp_path / "eval", adapter=tmp_path / "adapter",
                   decoding=Decoding(max_new_tokens=12, batch_size=2),
                   task_options={"synthetic": {"n_test": 3}}, progress=False, device="cpu")
    gens = res.generations.sort("id")
    direct = generate(loaded, tok, gens["prompt"].to_list(),
                      Decoding(max_new_tokens=12, stop_strings=("### Instruction",)))
    assert gens["raw_output"].to_list() == [g.text for g in direct]
    assert set(gens["model"]) == {"adapter"}
