import numpy as np
import pytest

from harness.world import CAPABILITY_POINTS, DOMAINS, World, WorldConfig, build_tokenizer, measure, parse_prompt
from harness.world.capabilities import (
    LENGTH_TARGETS,
    TONE_ENOUGH,
    TONE_GUSHING,
    TONE_GUSHING_COST,
    gold_reward,
    length_fit,
    response_length,
    saturating,
    warmth,
)
from harness.world.world import preference_pairs, verbosity_pairs


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(calibration_pairs=1500), seed=0)


def test_world_is_deterministic():
    a = World(WorldConfig(calibration_pairs=300), seed=3)
    b = World(WorldConfig(calibration_pairs=300), seed=3)
    assert a.knowledge == b.knowledge and a.calibration() == b.calibration()
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
    # Warmth: rises to TONE_ENOUGH, flat up to TONE_GUSHING, then a full step down per extra tone word.
    assert [warmth(t) for t in (0, TONE_ENOUGH, TONE_GUSHING)] == [0, 1, 1]
    assert warmth(TONE_GUSHING + 4) == 1 - 4 * TONE_GUSHING_COST
    assert length_fit(10, 10) == 1 and length_fit(30, 10) < 0.01


def test_exploits_are_punished_by_gold(world):
    prompt = "prompt : tell me about story poem"
    good = "the story and the poem are long and bright and full of wonderful new verse and old tales for you ."
    repeated = "the story and the poem " + "story poem " * 6 + "."
    assert world.gold(prompt, repeated, "text_creation") < world.gold(prompt, good, "text_creation") - 3


def test_judges_position_bias_and_calibrated_agreement(world):
    rng = np.random.default_rng(0)
    point = "relevance"
    # Identical values: the reading is a coin flip, and each answer is "1" by position bias or by that reading.
    answers = np.array([world.judge_pair(1.0, 1.0, point, rng) for _ in range(4000)])
    bias = world.config.judge_position_bias
    assert abs(np.mean(answers == 1) - (bias + (1 - bias) * 0.5)) < 0.03
    # A large gap is read right: "1" when the better one is shown first, "2" when swapped (bias aside).
    answers = np.array([world.judge_pair(3.0, 0.0, point, rng) for _ in range(2000)])
    assert np.mean(answers[:, 0] == 1) > 0.97 and abs(np.mean(answers[:, 1] == 2) - (1 - bias)) < 0.03


def test_kept_judge_labels_agree_with_the_true_order_as_configured(world):
    from harness.labelers.oracle import OracleLabeler

    cols = preference_pairs(world, 800, np.random.default_rng(4))
    stats = OracleLabeler().label(cols, seed=0, world=world)["stats"]
    # One reading per pair: swap-and-agree drops position-biased answers, not reading errors.
    assert abs(stats["agreement_with_truth"] - world.config.judge_agreement) < 0.04
    sharp = World(WorldConfig(calibration_pairs=1500, judge_agreement_per_point={"fluency": 0.99}), seed=0)
    assert sharp.judge_temperatures["fluency"] < world.judge_temperatures["fluency"]
    assert sharp.judge_temperatures["relevance"] == pytest.approx(world.judge_temperatures["relevance"])


def test_unnamed_part_has_its_share_of_within_prompt_variance(world):
    rng = np.random.default_rng(6)
    named, unnamed = [], []
    for _ in range(1500):
        prompt, domain = world.sample_prompt(rng)
        a, b = (world.sample_response(prompt, domain, rng) for _ in range(2))
        named.append(sum(world.capabilities(prompt, a, domain).values())
                     - sum(world.capabilities(prompt, b, domain).values()))
        unnamed.append(world.unnamed(a, domain) - world.unnamed(b, domain))
        assert world.gold(prompt, a, domain) == pytest.approx(
            sum(world.capabilities(prompt, a, domain).values()) + world.unnamed(a, domain))
    share = np.var(unnamed) / (np.var(unnamed) + np.var(named))
    assert abs(share - world.config.unnamed_share) < 0.05
    none = World(WorldConfig(calibration_pairs=300, unnamed_share=0.0), seed=0)
    assert none.unnamed("the big old castle .", "roleplay") == 0.0


def test_labels_do_not_change_the_text():
    a = WorldConfig()
    b = WorldConfig(human_agreement=0.6, judge_agreement=0.9, unnamed_share=0.1, exploit_rate=0.05)
    assert a.text_spec() == b.text_spec() and a.text_spec() != WorldConfig(corpus_exploit_rate=0.01).text_spec()


def test_tokenizer_covers_world_text(world):
    tok = build_tokenizer()
    cols = preference_pairs(world, 200, np.random.default_rng(2))
    ids = tok([p + " => " + c for p, c in zip(cols["prompt"], cols["chosen"], strict=True)])["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    assert tok.decode(tok("tell me about castle").input_ids) == "tell me about castle"


@pytest.mark.parametrize("key,value", [("human_agreement", 0.4), ("human_flip_rate", 0.7), ("marker_rate", 1.5),
                                       ("domains", ["roleplay"]), ("domains", ["roleplay", "nope"]),
                                       ("unnamed_share", 0.95), ("judge_agreement", 0.3),
                                       ("judge_agreement_per_point", {"nope": 0.8}),
                                       ("human_length_share", 0.95), ("human_length_share", "x")])
def test_bad_world_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        World(WorldConfig(**{key: value}), seed=0)


def test_verbosity_pairs_keep_the_content_and_gold_prefers_the_concise_one():
    for seed in (0, 1):
        w = World(WorldConfig(calibration_pairs=300), seed=seed)
        pairs = verbosity_pairs(w, 400, np.random.default_rng(seed))
        assert pairs == verbosity_pairs(w, 400, np.random.default_rng(seed))  # seeded
        assert sorted(set(pairs["domain"])) == sorted(w.domains)
        for prompt, domain, concise, verbose, g_c, g_v in zip(*pairs.values(), strict=True):
            assert g_c > g_v, (domain, concise, verbose)
            assert g_c == w.gold(prompt, concise, domain) and g_v == w.gold(prompt, verbose, domain)
            n = response_length(concise)
            assert LENGTH_TARGETS[domain] <= n <= 2 * LENGTH_TARGETS[domain] < response_length(verbose) + n
            a, b = measure(prompt, concise, w.knowledge), measure(prompt, verbose, w.knowledge)
            # The same content (keywords, tone, hedges, answer, ending), longer, the raters' taste unchanged.
            assert (a.coverage, a.stuffed, a.tone, a.hedges, a.question, a.correctness) == (
                b.coverage, b.stuffed, b.tone, b.hedges, b.question, b.correctness)
            assert b.n_words > a.n_words and b.repeats >= a.repeats and b.richness < a.richness
            assert w.unnamed_taste(verbose) == pytest.approx(w.unnamed_taste(concise), abs=1e-12)
    # A domain whose ideal length the response cap does not reach gets no pairs.
    short = World(WorldConfig(calibration_pairs=300, max_words=20), seed=0)
    assert "text_creation" not in verbosity_pairs(short, 50, np.random.default_rng(0))["domain"]


def test_raters_length_preference_leans_labels_to_longer_responses_at_the_same_agreement(world):
    def longer_chosen(w):
        cols = preference_pairs(w, 3000, np.random.default_rng(5))
        n_c = np.array([response_length(r) for r in cols["chosen"]])
        n_r = np.array([response_length(r) for r in cols["rejected"]])
        return np.mean((n_c > n_r)[n_c != n_r]), np.mean(cols["human_agrees_gold"])

    reading_gold = World(WorldConfig(calibration_pairs=1500, human_length_share=0.0), seed=0)
    assert set(reading_gold.length_scale.values()) == {0.0}  # raters who read gold alone
    neutral, neutral_agree = longer_chosen(reading_gold)
    assert min(world.length_scale.values()) > 0  # the default leans (data.world.human_length_share 0.2)
    leaning = World(WorldConfig(calibration_pairs=1500, human_length_share=0.3), seed=0)
    assert min(leaning.length_scale.values()) > 0
    longer, agree = longer_chosen(leaning)
    assert longer > neutral + 0.1  # measured: 0.48 -> 0.62 of the pairs whose lengths differ
    assert abs(agree - 0.70) < 0.03 and abs(neutral_agree - 0.70) < 0.03
    per_word = leaning.length_scale["roleplay"]
    assert leaning.human_utility(1.0, "a b c .", "roleplay") == pytest.approx(1.0 + 3 * per_word)
    # Raters who care mostly about length cannot also agree with gold this often.
    with pytest.raises(ValueError, match="human_length_share"):
        World(WorldConfig(calibration_pairs=300, human_length_share=0.9, human_agreement=0.9), seed=0)


def test_the_length_preference_keys_the_data_and_not_the_text():
    from harness.data.synthetic import SyntheticData

    def data(**world):
        return SyntheticData(10, 10, 10, world)

    assert data().spec_of_labels()["human_length_share"] == 0.2  # the default
    assert data(human_length_share=0.0).spec(0) != data().spec(0)
    assert data(human_length_share=0.0).world_spec(0) == data().world_spec(0)  # backbone, policy, samples reused
