"""Supervised fine-tuning of the tiny policy (``optimize.policy.TinyPolicy``): a causal LM trained from scratch
on (prompt => response) text with the loss on response tokens only — the prompt is context, not a target."""

from __future__ import annotations

from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from ..backbones import pretrain_causal_lm
from ..device import CPU, Compute
from ..optim import UpdateRule
from ..seeds import Stream, derive_seed


def supervised_finetune(tok: PreTrainedTokenizerBase, heads: list[str], responses: list[str], spec: dict,
                        rule: UpdateRule, steps: int, batch_size: int, log_every: int, seed: int,
                        compute: Compute = CPU, bucket_chunks: int = 1) -> LlamaForCausalLM:
    """``heads[i]`` is the text response i is generated after (the policy's prompt layout); ``spec`` sizes the
    model; ``seed`` is the job seed; ``compute`` where it trains; ``bucket_chunks`` > 1 groups batches by length
    (``backbones.draws``)."""
    texts = [f"{h} {r}" for h, r in zip(heads, responses, strict=True)]
    # The loss counts from the first response token on.
    loss_from = [len(ids) for ids in tok(heads, add_special_tokens=False)["input_ids"]]
    return pretrain_causal_lm(tok, texts, spec, rule, steps=steps, batch_size=batch_size, log_every=log_every,
                              init_seed=derive_seed(seed, Stream.POLICY_INIT),
                              batch_seed=derive_seed(seed, Stream.POLICY_BATCHES), loss_from=loss_from,
                              what="policy SFT", compute=compute, bucket_chunks=bucket_chunks)
