"""The length-bias metrics (harness/length_bias.py): the within-prompt length correlation and the style-controlled
accuracy on hand values, and on the tiny world with hand-made reward models whose reward is (minus) length."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.archs.base import RewardModel, RewardOutput, View
from harness.length_bias import sample_length_bias, style_accuracy, style_controlled, within_prompt_corr
from harness.world.capabilities import response_length
from harness.world.world import verbosity_pairs


class LengthRM(RewardModel):
    """Rewards ``sign`` x the sequence's token count; its views: the negation, and a capability expert (which is
    not a reward: left out of the length bias)."""

    def __init__(self, sign: float = 1.0):
        super().__init__()
        self.sign = sign

    def forward(self, batch):
        return RewardOutput(reward=self.sign * batch.attention_mask.sum(1).float())

    def views(self):
        return {"negative": View(lambda b: -self(b).reward),
                "capability/roleplay/length": View(lambda b: self(b).reward, capability=("roleplay", "length"))}


def test_a_reward_that_is_length_has_correlation_one():
    lengths = np.array([[3, 5, 9, 4], [10, 2, 7, 7], [6, 6, 6, 6]])
    assert within_prompt_corr(lengths, lengths) == pytest.approx(1.0)
    assert within_prompt_corr(2.5 * lengths + 1, lengths) == pytest.approx(1.0)
    assert within_prompt_corr(-lengths, lengths) == pytest.approx(-1.0)
    # The constant third prompt has no correlation and is left out; the mean is over the other two.
    noise = np.array([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    want = np.mean([np.corrcoef(noise[i], lengths[i])[0, 1] for i in range(2)])
    assert within_prompt_corr(noise, lengths) == pytest.approx(want)
    assert math.isnan(within_prompt_corr(np.ones((2, 3)), lengths[:2, :3]))


def test_style_controlled_accuracy_of_gold_is_one_and_of_length_zero(tiny):
    world = tiny.data.world
    pairs = verbosity_pairs(world, 200, np.random.default_rng(0))
    gold_c, gold_v = pairs["gold_concise"], pairs["gold_verbose"]
    acc = style_accuracy(gold_c, gold_v, gold_c, gold_v, pairs["domain"])
    assert acc["overall"] == 1.0 and acc["n"] == 200  # gold decides every pair
    lengths = {side: [response_length(r) for r in pairs[side]] for side in ("concise", "verbose")}
    assert style_accuracy(lengths["concise"], lengths["verbose"], gold_c, gold_v, pairs["domain"])["overall"] == 0.0
    # A constant reward ties every pair: wrong on every one (the one rule).
    assert style_accuracy(np.zeros(200), np.zeros(200), gold_c, gold_v, pairs["domain"])["overall"] == 0.0


@pytest.mark.parametrize("sign,want", [(1.0, 0.0), (-1.0, 1.0)])
def test_style_controlled_reads_the_rm_and_its_reward_views(tiny, sign, want):
    out = style_controlled(LengthRM(sign), tiny.backbone, tiny.data, seed=0, n_pairs=60, batch_size=16)
    assert out["n_pairs"] == 60 and out["gold_prefers_concise"] == 1.0
    assert out["accuracy"]["overall"] == want and out["accuracy"]["n"] == 60
    assert set(out["accuracy"]["per_domain"]) == set(tiny.data.domains)
    assert set(out["views"]) == {"negative"} and out["views"]["negative"]["overall"] == 1.0 - want
    assert out["words"]["verbose"] > out["words"]["concise"]
    # Seeded: the same pairs, the same numbers.
    assert style_controlled(LengthRM(sign), tiny.backbone, tiny.data, 0, 60, 16)["accuracy"] == out["accuracy"]


def test_style_controlled_needs_a_world(tiny):
    class NoWorld:
        domains = tiny.data.domains
        world = None

    assert style_controlled(LengthRM(), tiny.backbone, NoWorld(), 0, 10, 16) is None


def test_sample_length_bias_on_hand_made_samples(tiny):
    prompts = ["prompt : tell me about castle", "chat : tell me about coffee"]
    responses = [["the castle .", "the old castle is big .", "a .", "the very old castle is very big and old ."],
                 ["coffee is good .", "the coffee .", "the coffee is very good and warm every morning .", "so ."]]
    lengths = np.array([[response_length(r) for r in row] for row in responses], dtype=float)
    texts = ([p for p in prompts for _ in range(4)], [r for row in responses for r in row],
             ["roleplay"] * 4 + ["chitchat"] * 4)
    out = sample_length_bias(LengthRM(), tiny.backbone, tiny.data, texts, proxy=lengths, gold=-lengths,
                             batch_size=3)
    assert out["reward"] == pytest.approx(1.0) and out["gold"] == pytest.approx(-1.0)
    # The view is scored here, on the texts: minus the token count, which the tiny tokenizer makes words + a constant.
    assert set(out["views"]) == {"negative"} and out["views"]["negative"] == pytest.approx(-1.0)
    assert out["mean_words"] == pytest.approx(lengths.mean())
