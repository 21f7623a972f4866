"""The tiny SFT policy: cached, samples world text, deterministic under a seed, response-only SFT loss."""

import pytest
import torch
from conftest import TINY_POLICY, make_policy

from harness.optimize.policy import TinyPolicy, response_mask
from harness.seeds import Stream


def test_response_mask_stops_at_first_eos():
    eos = 3
    ids = torch.tensor([[5, 6, 3, 0, 0], [5, 3, 3, 0, 0], [5, 6, 7, 8, 9]])
    assert response_mask(ids, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_policy_is_cached_and_decodes_world_words(tiny):
    first = make_policy(tiny)
    hits = tiny.cache.stats["hits"]
    again = make_policy(tiny)
    assert again.path == first.path and tiny.cache.stats["hits"] == hits + 1
    prompts = [p for p, _ in tiny.data.eval_prompts(3, seed=0)]
    texts = first.sample(prompts, seed=0, stream=Stream.BON_SAMPLES)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    vocab = set(first.tokenizer.get_vocab())
    assert all(w in vocab for t in texts for w in t.split())
    assert all(len(t.split()) <= first.max_new_tokens for t in texts)
    # Sampling settings are part of the sample cache key; the SFT weights are not retrained for them.
    hot = make_policy(tiny, temperature=2.0)
    assert hot.path == first.path and hot.cache_spec() != first.cache_spec()


def test_same_seed_same_samples(tiny):
    policy = make_policy(tiny)
    prompts = [p for p, _ in tiny.data.eval_prompts(4, seed=0) for _ in range(8)]
    a, b = (policy.sample(prompts, seed=0, stream=Stream.BON_SAMPLES) for _ in range(2))
    c = policy.sample(prompts, seed=1, stream=Stream.BON_SAMPLES)
    gold_set = policy.sample(prompts, seed=0, stream=Stream.GOLD_SAMPLES)  # gold=rm's samples: their own draws
    assert a == b
    assert a != c and a != gold_set


def test_generation_pads_after_eos_and_decode_stops_there(tiny):
    policy = make_policy(tiny)
    ids, mask = policy.encode_prompts([p for p, _ in tiny.data.eval_prompts(16, seed=0)])
    assert (mask[:, -1] == 1).all(), "prompts must be left-padded so generation starts right after them"
    response = policy.generate(policy.model, ids, mask, seed=0)
    emitted = response_mask(response, policy.eos_id).bool()
    assert (response[~emitted] == policy.pad_id).all()
    assert response.shape[1] <= policy.max_new_tokens


def test_sft_loss_counts_response_tokens_only(tiny):
    """SFT learns the responses: their likelihood beats an untrained model's by a wide margin."""
    from transformers import LlamaForCausalLM

    from harness.backbones import tiny_llama_config

    policy = make_policy(tiny)
    prompts, responses = tiny.data.corpus(20, seed=0)
    heads = [policy.prompt_text(p) for p in prompts]
    enc = policy.tokenizer([f"{h} {r} [EOS]" for h, r in zip(heads, responses, strict=True)], padding=True,
                           padding_side="right", return_tensors="pt", add_special_tokens=False)
    starts = [len(policy.tokenizer(h, add_special_tokens=False)["input_ids"]) for h in heads]
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    labels = labels.masked_fill(torch.arange(labels.shape[1])[None] < torch.tensor(starts)[:, None], -100)
    torch.manual_seed(0)
    untrained = LlamaForCausalLM(tiny_llama_config(policy.tokenizer, policy.sft)).eval()
    with torch.no_grad():
        nll_sft = policy.model(**enc, labels=labels).loss.item()
        nll_untrained = untrained(**enc, labels=labels).loss.item()
    assert nll_sft < nll_untrained - 0.5


@pytest.mark.parametrize("key,value", [("temperature", 0.0), ("max_new_tokens", 0), ("hidden_size", 30),
                                       ("max_length", 12), ("sft_warmup", 1.0), ("sft_max_grad_norm", 0.0),
                                       ("sft_weight_decay", -0.1), ("sft_log_every", 0)])
def test_bad_policy_knobs_fail_clearly(key, value):
    kwargs = {k: v for k, v in {**TINY_POLICY, key: value}.items() if k != "_target_"}
    with pytest.raises(ValueError, match=key):
        TinyPolicy(**kwargs)


def test_pretrained_policy_from_a_local_directory_samples_like_the_same_weights(tiny):
    """The smollm2/hf policy class on a local model directory (here: the tiny SFT policy's own) samples exactly
    what the tiny policy samples with the same weights, prompt layout and seed."""
    from harness.optimize.policy import PretrainedPolicy

    policy = make_policy(tiny)
    local = PretrainedPolicy(name="local", path=str(policy.path), temperature=1.0,
                             max_new_tokens=policy.max_new_tokens, generation_batch_size=64).prepare(
        tiny.cache, tiny.data, seed=0)
    prompts = [p for p, _ in tiny.data.eval_prompts(4, seed=0)]
    assert local.prompt_text(prompts[0]) == policy.prompt_text(prompts[0])  # no chat template: "{prompt} =>"
    assert local.sample(prompts, 0, Stream.BON_SAMPLES) == policy.sample(prompts, 0, Stream.BON_SAMPLES)
    assert local.value_model(0).base_model is not None
