import numpy as np
import pytest

from harness.world import CAPABILITY_POINTS, DOMAINS, World, WorldConfig, build_tokenizer, measure, parse_prompt
from harness.world.capabilities import gold_reward, length_fit, saturating
from harness.world.world import preference_pairs


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(calibration_pairs=1500), seed=0)


def test_world_is_deterministic():
    a = World(WorldConfig(calibration_pairs=300), seed=3)
    b = World(WorldConfig(calibration_pairs=300), seed=3)
    assert a.knowledge == b.knowledge and a.human_temperature == b.human_temperature
    pa = preference_pairs(a, 50, np.random.default_rng(1))
    pb = preference_pairs(b, 50, np.random.default_rng(1))
    assert pa == pb
    c = World(WorldConfig(calibration_pairs=300), seed=4)
    assert preference_pairs(c, 50, np.random.default_rng(1)) != pa


def test_human_agreement_is_calibrated(world):
    cols = preference_pairs(world, 3000, np.random.default_rng(5))
    agree = np.mean(cols["human_agrees_gold"])
    assert abs(agree - 0.70) < 0.03  # binomial s.e. ~0.008 at n=3000


def test_harder_noise_lowers_agreement():
    w = World(WorldConfig(calibration_pairs=1500, human_agreement=0.6), seed=0)
    cols = preference_pairs(w, 3000, np.random.default_rng(5))
    assert abs(np.mean(cols["human_agrees_gold"]) - 0.60) < 0.03


def test_domains_have_3_to_6_named_points_and_weights_conflict():
    assert len(DOMAINS) >= 5
    for d in DOMAINS:
        assert 3 <= len(CAPABILITY_POINTS[d]) <= 6
    # The same response features score with opposite signs in different domains (multi-task conflict).
    warm = measure("prompt : tell me about castle", "wonderful lovely amazing castle .", {})
    plain = measure("prompt : tell me about castle", "the old castle is near .", {})
    d_role = gold_reward("roleplay", warm) - gold_reward("roleplay", plain)
    d_fact = gold_reward("objective_qa", warm) - gold_reward("objective_qa", plain)
    assert d_role > 0 > d_fact


def test_scorers_on_hand_made_examples():
    prompt = "fact : tell me about river tower . what colour is amber ?"
    parsed = parse_prompt(prompt)
    assert parsed.keywords == ("river", "tower") and parsed.entity == "amber"
    kb = {"amber": "red"}
    f = measure(prompt, "answer is red river maybe .", kb)
    assert f.correctness == 1 and f.coverage == 0.5 and f.hedges == 1 and f.question == 0
    assert measure(prompt, "answer is blue .", kb).correctness == -1
    assert measure(prompt, "no colour here ?", kb).correctness == 0 and measure(prompt, "x ?", kb).question == 1
    stuffed = measure(prompt, "river river river river river tower .", kb)
    assert stuffed.stuffed == 3 and stuffed.coverage == 1.0
    rep = measure(prompt, "big dog big dog big dog .", kb)
    assert rep.repeats == 3  # (big,dog) x3 -> 2 extra, (dog,big) x2 -> 1 extra
    assert saturating(3, 3) == 1 and saturating(0, 3) == 0 and saturating(9, 3) < 0
    assert length_fit(10, 10) == 1 and length_fit(30, 10) < 0.01


def test_exploits_are_punished_by_gold(world):
    prompt = "prompt : tell me about story poem"
    good = "the story and the poem are long and bright and full of wonderful new verse and old tales for you ."
    repeated = "the story and the poem " + "story poem " * 6 + "."
    assert world.gold(prompt, repeated, "text_creation") < world.gold(prompt, good, "text_creation") - 3


def test_judges_position_bias_and_noise(world):
    rng = np.random.default_rng(0)
    point = "relevance"
    # Identical values: only the position bias separates "first" from coin-flips.
    firsts = np.mean([world.judge(1.0, 1.0, point, rng) == 1 for _ in range(4000)])
    bias = world.config.judge_position_bias
    assert abs(firsts - (bias + (1 - bias) * 0.5)) < 0.03
    # A large gap is read right (apart from position-biased answers when shown second).
    right = np.mean([world.judge(3.0, 0.0, point, rng) == 1 for _ in range(2000)])
    assert right > 0.95


def test_tokenizer_covers_world_text(world):
    tok = build_tokenizer()
    cols = preference_pairs(world, 200, np.random.default_rng(2))
    ids = tok([p + " => " + c for p, c in zip(cols["prompt"], cols["chosen"], strict=True)])["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    assert tok.decode(tok("tell me about castle").input_ids) == "tell me about castle"


@pytest.mark.parametrize("key,value", [("human_agreement", 0.4), ("human_flip_rate", 0.7), ("marker_rate", 1.5),
                                       ("domains", ["roleplay"]), ("domains", ["roleplay", "nope"])])
def test_bad_world_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        World(WorldConfig(**{key: value}), seed=0)
