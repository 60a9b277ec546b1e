"""Generation throughput: kdlens's batched generator vs the paper's one-example-at-a-time loop.

The paper's evaluation calls ``model.generate`` on one prompt at a time (LLM-Adapters' evaluate.py).
kdlens batches left-padded prompts with a KV cache and drops finished rows. This script times, on
the same model and prompts (the synthetic task's Alpaca prompts), greedy decoding with
- ``paper_loop_b1``: ``model.generate`` per prompt (the paper's loop),
- ``kdlens_b1``: kdlens.eval.decode with batch size 1 (the loop without batching),
- ``kdlens_bN``: kdlens.eval.decode with batch size N (default 16),
asserts that every mode produced exactly the same token ids (greedy results must not depend on the
batch size), and appends rows (generated tokens/s, speed-up over the paper's loop) to
benches/results/generate_throughput.csv.

Run (CPU, tiny model; a quiet machine gives the numbers to quote):
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python benches/generate_throughput.py
GPU, a 0.5B-scale Qwen2 config with random weights (fp32, TF32 off, so outputs can be compared;
add a second run with --dtype bfloat16 for speed, where rows record whether outputs still match):
    PYTHONPATH=python python benches/generate_throughput.py --device cuda --model qwen0.5b --prompts 64 --max-new-tokens 128
The exit status is 1 when a mode's greedy token ids differ from the paper loop's (rows are kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# 0.5B-scale Qwen2: Qwen2.5-0.5B's shapes and logit width (token ids past the small benchmark
# tokenizer's vocabulary decode to nothing, which does not matter here: token ids are compared).
QWEN_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864, vocab_size=151936)


def build(model_name: str, device: str, dtype: str, n_prompts: int, seed: int = 0, vocab_size: int = 0):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from kdlens.data.prompts import ALPACA
    from kdlens.data.synthetic import make_task, train_tokenizer
    from kdlens.models import tiny_config

    task = make_task(seed=seed, n_train=400, n_test=n_prompts)
    tok = train_tokenizer(task.texts(), vocab_size=512)
    if model_name == "qwen0.5b":
        shapes = {**QWEN_05B, "vocab_size": vocab_size or QWEN_05B["vocab_size"]}
        config = Qwen2Config(max_position_embeddings=2048, tie_word_embeddings=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             bos_token_id=None, **shapes)
    else:
        config = tiny_config(model_name, vocab_size or len(tok), eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    config.initializer_range = 0.1  # spread the random logits: greedy picks far from ties
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=getattr(torch, dtype)).eval()
    prompts = [ALPACA.prompt(r["instruction"], r["input"]) for r in task.test]
    return model, tok, prompts


def paper_loop(model, tok, prompts, max_new_tokens, device):
    import torch

    outs = []
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, return_tensors="pt").to(device)
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            outs.append(out[0, ids["input_ids"].shape[1]:].tolist())
    return outs


def kdlens_loop(model, tok, prompts, max_new_tokens, batch_size):
    from kdlens.eval.decode import Decoding, generate

    dec = Decoding(max_new_tokens=max_new_tokens, batch_size=batch_size, stop_strings=())
    return [g.token_ids for g in generate(model, tok, prompts, dec, eos_token_ids=[tok.eos_token_id])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-teacher", help="tiny-teacher, tiny-s1..s3 or qwen0.5b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--vocab-size", type=int, default=0,
                        help="model logit width (0: the tokenizer's; qwen0.5b: 151936)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per mode (best is kept)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append rows")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model, tok, prompts = build(args.model, args.device, args.dtype, args.prompts, vocab_size=args.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    modes = [("paper_loop_b1", lambda: paper_loop(model, tok, prompts, args.max_new_tokens, args.device)),
             ("kdlens_b1", lambda: kdlens_loop(model, tok, prompts, args.max_new_tokens, 1)),
             (f"kdlens_b{args.batch_size}",
              lambda: kdlens_loop(model, tok, prompts, args.max_new_tokens, args.batch_size))]
    kdlens_loop(model, tok, prompts[:2], 4, 2)  # warm-up (allocator, kernels)
    paper_loop(model, tok, prompts[:1], 4, args.device)
    outputs, seconds = {}, {}
    for name, fn in modes:
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            outputs[name] = fn()
            sync()
            best = min(best, time.perf_counter() - start)
        seconds[name] = best
    reference = outputs["paper_loop_b1"]
    identical = {name: outputs[name] == reference for name in outputs}
    tokens = sum(len(t) for t in reference)
    rows = []
    for name, _ in modes:
        rows.append({
            "bench": "generate_throughput", "mode": name, "model": args.model, "params": n_params,
            "vocab": model.config.vocab_size, "dtype": args.dtype, "prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "threads": args.threads, "generated_tokens": sum(len(t) for t in outputs[name]),
            "seconds": round(seconds[name], 4),
            "tokens_per_s": round(sum(len(t) for t in outputs[name]) / seconds[name], 2),
            "speedup_vs_paper_loop": round(seconds["paper_loop_b1"] / seconds[name], 2),
            "identical_to_paper_loop": identical[name],
        })
    if args.no_record:
        for r in rows:
            print(r)
    else:
        from _record import record

        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        record("generate_throughput", rows, device=device)
    if not all(identical.values()):
        bad = [n for n, ok in identical.items() if not ok]
        print(f"greedy outputs differ from the paper loop in: {', '.join(bad)} ({tokens} tokens)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
