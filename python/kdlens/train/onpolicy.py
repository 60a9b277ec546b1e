"""On-policy sampling for GKD (paper section 4): with probability ``onpolicy_lambda`` a micro-batch is
replaced by the student's own samples, drawn with the evaluation's decoder (kdlens.eval.decode).
"""

from __future__ import annotations

import random

import torch

from kdlens.data.collate import Example
from kdlens.train.step import ON_POLICY, mix_seed


class OnPolicySampler:
    """A part of :class:`~kdlens.train.loop.Trainer` (needs ``cfg``, ``dist``, ``student`` and
    ``tokenizer``)."""

    def _maybe_on_policy(self, examples: list[Example], step: int, micro: int) -> tuple[list[Example], bool]:
        cfg = self.cfg
        if cfg.mode != "kd" or cfg.onpolicy_lambda <= 0.0:
            return examples, False
        seed = mix_seed(cfg.seed, step, micro, self.dist.rank, ON_POLICY)
        if random.Random(seed).random() >= cfg.onpolicy_lambda:
            return examples, False
        return self._sample_from_student(examples, seed), True

    @torch.no_grad()
    def _sample_from_student(self, examples: list[Example], seed: int) -> list[Example]:
        """Replace a micro-batch by student samples (paper section 4): do_sample, T=1, top_k=0,
        top_p=1, max_new_tokens = max_length - the longest prompt, with the evaluation's decoder
        (left padding, KV cache, one generator per item seeded from ``seed`` and its position);
        decoded and re-tokenised."""
        from kdlens.eval.decode import Decoding, generate_ids

        cfg, tok = self.cfg, self.tokenizer
        prompts = [e.input_ids[:e.prompt_len] for e in examples]
        width = max(len(p) for p in prompts)
        decoding = Decoding(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                            max_new_tokens=max(1, cfg.max_length - width), seeds=(seed,),
                            batch_size=len(prompts), stop_strings=())
        was_training = self.student.training
        self.student.eval()
        outs = generate_ids(self.student, tok, prompts, decoding, eos_token_ids=[tok.eos_token_id])
        self.student.train(was_training)
        samples = []
        for prompt, (tokens, _) in zip(prompts, outs):
            text = tok.decode(tokens, skip_special_tokens=True)
            prompt_text = tok.decode(prompt, skip_special_tokens=False)
            full = tok(prompt_text + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            full = full[:cfg.max_length]
            samples.append(Example(input_ids=full, labels=list(full), prompt_len=min(len(prompt), len(full))))
        return samples
