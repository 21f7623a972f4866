"""The synthetic preference world: prompts, a response generator, a known gold reward, noisy annotators.

Seeded and deterministic: one ``WorldConfig`` and one seed give the same knowledge base, prompts, responses
and labels on every machine. It imports nothing of the harness but itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..progress import progress
from ..seeds import Stream, derive_seed
from .capabilities import (
    CAPABILITY_POINTS,
    LENGTH_TARGETS,
    capability_values,
    gold_reward,
    measure,
    parse_prompt,
    response_length,
)
from .vocab import (
    COLOURS,
    DOMAIN_MARKERS,
    DOMAINS,
    ENTITIES,
    FILLER,
    HEDGES,
    NEUTRAL_MARKER,
    SHARED_TOPICS,
    TONE,
    TOPICS,
)

# Bump whenever the world's semantics change (vocabulary, scorers, weights, annotators, generator): it is part of
# every cache key derived from world data, so artifacts built by an older world are never reused.
WORLD_VERSION = 4  # 4: the raters like length by default (human_length_share 0.2; 0 reproduces v3's labels)
# Bump whenever the world's TEXT changes (vocabulary, prompts, the response generator): the key of what is trained
# on world text alone (backbone pre-training, policy SFT, the policy's samples), which a change of gold or of the
# annotators leaves valid.
TEXT_VERSION = 3


# Tone words in a tone-stuffed response: [low, high), past the point where warmth turns into gushing.
TONE_STUFFING = (9, 15)

# WorldConfig fields that change the world's text (see WorldConfig.text_spec).
TEXT_KNOBS = ("domains", "marker_rate", "domain_topic_rate", "max_words", "corpus_exploit_rate")


@dataclass
class WorldConfig:
    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    marker_rate: float = 0.2  # chance a prompt names its domain; low, so the task category is a weak cue
    domain_topic_rate: float = 0.5  # chance each keyword comes from the domain's own topic pool
    max_words: int = 40  # response cap; keeps sequences short (cost grows with length squared)
    exploit_rate: float = 0.0  # chance of each exploit kind per preference-pair response (stuffing, tone, ...)
    corpus_exploit_rate: float = 0.06  # the same in the text corpus (backbone pre-training, policy SFT)
    unnamed_share: float = 0.25  # share of gold's within-prompt variance that no capability point names
    human_agreement: float = 0.70  # target P(human label == gold order) on random pairs
    human_flip_rate: float = 0.0  # extra uniform label flips on top of Bradley-Terry sampling
    # Share of the raters' within-prompt utility variance that is response length (they like longer responses, as
    # human raters do; gold does not): the labels still agree with gold `human_agreement` of the time, but their
    # errors lean towards the longer response. 0: the raters read gold alone (world v3).
    human_length_share: float = 0.2
    judge_agreement: float = 0.80  # target P(a judge's reading of one point == its true order) on random pairs
    judge_agreement_per_point: dict[str, float] = field(default_factory=dict)  # {point: agreement} overrides
    judge_position_bias: float = 0.15  # chance a judge answers "the first one" whatever it reads
    calibration_pairs: int = 4000

    def text_spec(self) -> dict:
        """The knobs that decide the world's TEXT (prompts, generator responses): what a pre-trained backbone or
        SFT policy depends on. Labels (humans, judges) and gold's unnamed part do not change a word, so a
        sweep over them reuses one backbone and one policy."""
        return {k: getattr(self, k) for k in TEXT_KNOBS}

    def validate(self) -> None:
        # Types first: a string or a list from the command line would otherwise fail deep inside, unnamed.
        if not isinstance(self.domains, (list, tuple)) or not all(isinstance(d, str) for d in self.domains):
            raise ValueError(f"data.world.domains={self.domains!r} must be a list of domain names; valid: "
                             f"{list(DOMAINS)}")
        for key in ("marker_rate", "domain_topic_rate", "exploit_rate", "corpus_exploit_rate", "unnamed_share",
                    "human_agreement", "human_flip_rate", "human_length_share", "judge_agreement",
                    "judge_position_bias"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"data.world.{key}={v!r} must be a finite number")
        for key in ("max_words", "calibration_pairs"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"data.world.{key}={v!r} must be an integer")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"data.world.domains={list(self.domains)} names a domain twice")
        if self.calibration_pairs < 1:
            raise ValueError(f"data.world.calibration_pairs={self.calibration_pairs} must be >= 1")
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"data.world.domains: unknown {unknown}; valid: {list(DOMAINS)}")
        if len(self.domains) < 2:
            raise ValueError(f"data.world.domains: need at least 2 domains (got {len(self.domains)})")
        checks = {
            "marker_rate": (0.0, 1.0),
            "domain_topic_rate": (0.0, 1.0),
            "exploit_rate": (0.0, 0.2),
            "corpus_exploit_rate": (0.0, 0.2),
            "unnamed_share": (0.0, 0.9),
            "human_agreement": (0.5, 1.0),
            "human_flip_rate": (0.0, 0.5),
            "human_length_share": (0.0, 0.9),
            "judge_agreement": (0.5, 1.0),
            "judge_position_bias": (0.0, 1.0),
        }
        for key, (lo, hi) in checks.items():
            v = getattr(self, key)
            if not lo <= v <= hi:
                raise ValueError(f"data.world.{key}={v} is outside [{lo}, {hi}]")
        if not isinstance(self.judge_agreement_per_point, dict):
            raise ValueError(f"data.world.judge_agreement_per_point={self.judge_agreement_per_point!r} must be a "
                             "mapping {point: agreement}")
        points = {p for d in self.domains for p in CAPABILITY_POINTS[d]}
        for point, v in self.judge_agreement_per_point.items():
            if point not in points:
                raise ValueError(f"data.world.judge_agreement_per_point: unknown point {point!r}; points of these "
                                 f"domains: {sorted(points)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.5 <= v <= 1.0:
                raise ValueError(f"data.world.judge_agreement_per_point.{point}={v!r} must be a number in [0.5, 1]")
        if self.max_words < 8:
            raise ValueError(f"data.world.max_words={self.max_words} must be >= 8")


def pick(rng: np.random.Generator, options) -> str:
    """One uniform draw from ``options``: the very draw ``rng.choice(options)`` makes (one ``integers``), without
    its conversion of the list to an array, which made it 8x slower — the world's text generation is mostly this."""
    return options[int(rng.integers(len(options)))]


def picks(rng: np.random.Generator, options, k: int) -> list[str]:
    """``k`` uniform draws from ``options``, the same as ``k`` calls of ``pick`` (numpy draws bounded integers one
    after the other), in one call."""
    return [options[i] for i in rng.integers(len(options), size=k)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# How far from its target a calibrated agreement may end up before the target counts as unreachable.
AGREEMENT_TOLERANCE = 0.005


def _agreement(gaps: np.ndarray, toward: np.ndarray | None, temperature: float, ties_count_half: bool) -> float:
    """The expected agreement with the true order at ``temperature``: mean(sigmoid(toward / T)) over the pairs the
    truth decides (``gaps`` > 0: |true gap|), ties counted as coin flips (``ties_count_half``) or left out.
    ``toward``: the annotator's own gap, signed towards the true order (None: ``gaps`` itself)."""
    decided = gaps > 0
    read = gaps[decided] if toward is None else toward[decided]
    tie_share = 1 - len(read) / len(gaps) if ties_count_half else 0.0
    with np.errstate(over="ignore"):  # a gap far against the truth at a small T: exp overflows, sigmoid is 0
        return (1 - tie_share) * float(_sigmoid(read / temperature).mean()) + tie_share * 0.5


def _temperature_for(gaps: np.ndarray, agreement: float, ties_count_half: bool,
                     toward: np.ndarray | None = None) -> float:
    """The Bradley-Terry temperature T at which the expected agreement (``_agreement``) equals ``agreement``: over
    all pairs with ties counted as coin flips (``ties_count_half``), or over the decided pairs only. Without
    ``toward`` the agreement falls with T, from 1 to 1/2, so bisection is exact; an annotator leaning against the
    truth on some pairs (``toward`` < 0 there) tops out lower (the caller checks what was reached)."""
    if not (gaps > 0).any():
        return 1.0  # the point never separates two responses: any temperature reads ties the same
    lo, hi = 1e-4, 1e4
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        agree = _agreement(gaps, toward, mid, ties_count_half)
        lo, hi = (mid, hi) if agree > agreement else (lo, mid)
    return math.sqrt(lo * hi)


class World:
    def __init__(self, config: WorldConfig, seed: int, calibration: dict | None = None):
        """``calibration``: a previous ``calibration()`` of the same config and seed, to skip recalibrating."""
        config.validate()
        self.config = config
        self.seed = seed
        self.domains = list(config.domains)
        kb_rng = np.random.default_rng(derive_seed(seed, Stream.WORLD_KNOWLEDGE))
        self.knowledge = {e: str(kb_rng.choice(COLOURS)) for e in ENTITIES}
        # The raters' unnamed taste: how much they like each filler word, a fixed draw per world.
        taste_rng = np.random.default_rng(derive_seed(seed, Stream.WORLD_TASTE))
        self.taste = dict(zip(FILLER, taste_rng.standard_normal(len(FILLER)).tolist(), strict=True))
        self.unnamed_scale: dict[str, float] = {d: 0.0 for d in self.domains}  # the calibration sets it
        self.length_scale: dict[str, float] = {d: 0.0 for d in self.domains}  # the calibration sets it
        calibration = calibration or self._calibrate()
        self.human_temperature = float(calibration["human_temperature"])
        self.judge_temperatures = dict(calibration["judge_temperatures"])
        self.unnamed_scale = dict(calibration["unnamed_scale"])
        # Calibrations written before the raters' length preference existed have none: its share was 0 then.
        self.length_scale = dict(calibration.get("length_scale", self.length_scale))

    def calibration(self) -> dict:
        return {"human_temperature": self.human_temperature, "judge_temperatures": dict(self.judge_temperatures),
                "unnamed_scale": dict(self.unnamed_scale), "length_scale": dict(self.length_scale)}

    # ----------------------------------------------------------------------------------- prompts
    def sample_prompt(self, rng: np.random.Generator, domain: str | None = None) -> tuple[str, str]:
        """One prompt text and its (hidden) domain."""
        domain = domain or pick(rng, self.domains)
        marker = DOMAIN_MARKERS[domain] if rng.random() < self.config.marker_rate else NEUTRAL_MARKER
        other = SHARED_TOPICS + [w for d in self.domains for w in TOPICS[d]]
        n_kw = int(rng.integers(2, 4))
        keywords: list[str] = []
        while len(keywords) < n_kw:
            pool = TOPICS[domain] if rng.random() < self.config.domain_topic_rate else other
            w = pick(rng, pool)
            if w not in keywords:
                keywords.append(w)
        words = [marker, ":", "tell", "me", "about", *keywords]
        if domain == "objective_qa":
            words += [".", "what", "colour", "is", pick(rng, ENTITIES), "?"]
        return " ".join(words), domain

    # ----------------------------------------------------------------------------------- responses
    def sample_response(self, prompt: str, domain: str, rng: np.random.Generator,
                        exploit_rate: float | None = None) -> str:
        """A response from the world's generator: random quality knobs, and rare exploits (each kind with chance
        ``exploit_rate``, by default the preference pairs' ``config.exploit_rate``)."""
        cfg = self.config
        exploit_rate = cfg.exploit_rate if exploit_rate is None else exploit_rate
        parsed = parse_prompt(prompt)
        target = LENGTH_TARGETS[domain]
        n_words = int(round(target * rng.lognormal(0.0, 0.3) * rng.uniform(0.5, 1.6)))
        cover = rng.uniform(0.0, 1.0)  # how on-topic this response is
        keywords = [k for k, u in zip(parsed.keywords, rng.random(len(parsed.keywords)), strict=True) if u < cover]
        tone = picks(rng, TONE, rng.poisson(1.8))
        hedges = picks(rng, HEDGES, rng.poisson(1.2))
        exploit = rng.random(4) < exploit_rate
        if exploit[0]:  # keyword stuffing
            keywords = [k for k in parsed.keywords for _ in range(int(rng.integers(3, 7)))]
        if exploit[1]:  # tone stuffing
            tone = picks(rng, TONE, int(rng.integers(*TONE_STUFFING)))
        if exploit[3]:  # runaway length
            n_words = int(rng.integers(cfg.max_words - 8, cfg.max_words + 1))
        answer: list[str] = []
        if parsed.entity is not None:
            u = rng.random()
            if u < 0.5:
                answer = ["answer", "is", self.knowledge[parsed.entity]]
            elif u < 0.8:
                wrong = [c for c in COLOURS if c != self.knowledge[parsed.entity]]
                answer = ["answer", "is", pick(rng, wrong)]
        content = keywords + tone + hedges
        n_fill = max(0, n_words - len(content) - len(answer))
        words = content + picks(rng, FILLER, n_fill)
        rng.shuffle(words)
        if answer:
            at = int(rng.integers(0, len(words) + 1))
            words[at:at] = answer
        if exploit[2] and words:  # degenerate repetition: stuck on one word, 4-7 times in a row (what a small
            at = int(rng.integers(0, len(words)))  # LM sampled at temperature 1 does, and can learn to do)
            words[at:at] = [words[at]] * int(rng.integers(3, 7))
        words = words[: cfg.max_words - 1] if words else [pick(rng, FILLER)]
        words.append("?" if rng.random() < 0.4 else ".")
        return " ".join(words)

    def pad_verbosity(self, response: str, rng: np.random.Generator) -> str:
        """``response`` padded with verbosity: its filler words (the content-free glue, ``FILLER``) said once more,
        in a random order, after the last of them and before the final punctuation mark.

        Nothing gold reads gets better: the content (keywords, tone words, hedges, the answer) is untouched, the
        raters' taste (a mean over the filler words) is the same, richness (distinct / all words) falls, repeated
        phrases can only be added (every bigram of the response is still there), and the length grows — which
        gold's length point penalises once a response is past its domain's ideal length."""
        words = response.split()
        body, end = words[:-1], words[-1:]  # a world response ends with its punctuation mark
        filler = [w for w in body if w in self.taste]
        return " ".join(body + [filler[i] for i in rng.permutation(len(filler))] + end)

    # ----------------------------------------------------------------------------------- gold
    def features(self, prompt: str, response: str):
        return measure(prompt, response, self.knowledge)

    def unnamed_taste(self, response: str) -> float:
        """Mean taste of the response's filler words (0 without any): what raters like and no point names."""
        values = [self.taste[w] for w in response.split() if w in self.taste]
        return float(np.mean(values)) if values else 0.0

    def unnamed(self, response: str, domain: str) -> float:
        """Gold's unnamed part: the taste, scaled per domain to ``unnamed_share`` of gold's within-prompt variance."""
        return self.unnamed_scale[domain] * self.unnamed_taste(response)

    def gold(self, prompt: str, response: str, domain: str) -> float:
        """Gold = the named capability points + the unnamed part (capability decomposition is imperfect)."""
        return gold_reward(domain, self.features(prompt, response)) + self.unnamed(response, domain)

    def capabilities(self, prompt: str, response: str, domain: str) -> dict[str, float]:
        return capability_values(domain, self.features(prompt, response))

    def capability_names(self, domain: str) -> list[str]:
        return list(CAPABILITY_POINTS[domain])

    # ----------------------------------------------------------------------------------- annotators
    def _calibrate(self) -> dict:
        """The unnamed part's scale per domain, then Bradley-Terry temperatures for humans (to hit the target
        agreement with gold) and for judges (to hit each point's target agreement with its true order).

        On a fixed sample of random same-prompt pairs: the unnamed scale makes Var_within(unnamed) =
        share / (1 - share) * Var_within(named), so it is ``unnamed_share`` of the total (the two are drawn
        independently); a temperature uses the *expected* agreement mean(sigmoid(|gap| / T)), a smooth and
        monotone function of T, so bisection is exact and deterministic.
        """
        cfg = self.config
        rng = np.random.default_rng(derive_seed(self.seed, Stream.WORLD_CALIBRATION))
        # pairs: (domain, named gold gap, taste gap, length gap in words) of each same-prompt pair
        pairs, point_gaps = [], {}
        for _ in progress(range(cfg.calibration_pairs), desc="world: calibrating annotators", unit="pair"):
            prompt, domain = self.sample_prompt(rng)
            a, b = (self.sample_response(prompt, domain, rng) for _ in range(2))
            ca, cb = self.capabilities(prompt, a, domain), self.capabilities(prompt, b, domain)
            pairs.append((domain, sum(ca.values()) - sum(cb.values()), self.unnamed_taste(a) - self.unnamed_taste(b),
                          response_length(a) - response_length(b)))
            for name in ca:
                point_gaps.setdefault(name, []).append(abs(ca[name] - cb[name]))
        share = cfg.unnamed_share
        for d in self.domains:
            # E[(x_a - x_b)^2] / 2 is the within-prompt variance of x.
            v_named = float(np.mean([g ** 2 for dom, g, _, _ in pairs if dom == d] or [0.0])) / 2
            v_taste = float(np.mean([t ** 2 for dom, _, t, _ in pairs if dom == d] or [0.0])) / 2
            self.unnamed_scale[d] = math.sqrt(share / (1 - share) * v_named / v_taste) if v_taste > 0 else 0.0
        gold_gaps = np.asarray([g + self.unnamed_scale[d] * t for d, g, t, _ in pairs])
        # The raters' length preference: lambda_d per word, so that Var_within(lambda_d * length) =
        # share / (1 - share) * Var_within(gold) in each domain (the same reading of a share as the unnamed part's).
        length_share = cfg.human_length_share
        for d in self.domains:
            v_gold = float(np.mean([g ** 2 for g, (dom, *_) in zip(gold_gaps, pairs, strict=True) if dom == d]
                                   or [0.0])) / 2
            v_length = float(np.mean([n ** 2 for dom, _, _, n in pairs if dom == d] or [0.0])) / 2
            self.length_scale[d] = (math.sqrt(length_share / (1 - length_share) * v_gold / v_length)
                                    if length_share > 0 and v_length > 0 else 0.0)
        # Each pair's utility gap as the raters see it, signed towards gold's order: positive where they lean the way
        # gold does (without a length preference it is gold's own |gap|).
        length_gaps = np.asarray([self.length_scale[d] * n for d, _, _, n in pairs])
        toward_gold = np.sign(gold_gaps) * (gold_gaps + length_gaps)
        # With flip rate f, agreement = (1-f) * E[sigmoid] + f * (1 - E[sigmoid]).
        f = cfg.human_flip_rate
        if cfg.human_agreement >= 1.0 - f - 1e-9 and f > 0:
            raise ValueError(
                f"data.world.human_agreement={cfg.human_agreement} is unreachable with human_flip_rate={f}"
            )
        target = (cfg.human_agreement - f) / (1 - 2 * f) if f < 0.5 else 0.5
        human_t = _temperature_for(np.abs(gold_gaps), target, ties_count_half=True, toward=toward_gold)
        if length_share > 0:
            reached = _agreement(np.abs(gold_gaps), toward_gold, human_t, ties_count_half=True)
            if abs(reached - target) > AGREEMENT_TOLERANCE:
                raise ValueError(
                    f"data.world.human_length_share={length_share}: raters who like length that much agree with "
                    f"gold {reached:.3f} of the time at best, short of human_agreement={cfg.human_agreement}; "
                    "lower one of them")
        judge_t = {}
        for name, gaps in point_gaps.items():
            agreement = cfg.judge_agreement_per_point.get(name, cfg.judge_agreement)
            judge_t[name] = _temperature_for(np.asarray(gaps), agreement, ties_count_half=False)
        return {"human_temperature": human_t, "judge_temperatures": judge_t, "unnamed_scale": self.unnamed_scale}

    def human_utility(self, gold: float, response: str, domain: str) -> float:
        """What a simulated human rater weighs: ``gold`` (the response's gold reward) plus its length preference,
        ``length_scale`` per word (0 without one: gold itself)."""
        return gold + self.length_scale[domain] * response_length(response)

    def human_prefers_first(self, utility_a: float, utility_b: float, rng: np.random.Generator) -> bool:
        """One rater's label: Bradley-Terry on the two responses' ``human_utility``, then the uniform flips."""
        p = float(_sigmoid(np.asarray((utility_a - utility_b) / self.human_temperature)))
        first = rng.random() < p
        if rng.random() < self.config.human_flip_rate:
            first = not first
        return first

    def judge_pair(self, value_a: float, value_b: float, point: str, rng: np.random.Generator) -> tuple[int, int]:
        """A capability judge asked about one pair twice: with ``a`` shown first, then swapped. Returns the two
        answers, each 1 or 2 (which reply it says is better on ``point``).

        The judge reads the pair once, noisily (Bradley-Terry on the point's values, its temperature calibrated
        to ``judge_agreement``): an LLM judge that misreads a pair tends to misread it both ways round, so
        swapping does not average its reading errors away. Each answer is then, with chance
        ``judge_position_bias``, just "the first one" — what DMoERM's swap-and-agree rule filters. A label kept
        by that rule agrees with the true order about as often as one reading does (``judge_agreement``).
        """
        p = float(_sigmoid(np.asarray((value_a - value_b) / self.judge_temperatures[point])))
        reads_a_better = rng.random() < p
        bias = self.config.judge_position_bias
        first = 1 if rng.random() < bias or reads_a_better else 2  # reply 1 is a
        second = 1 if rng.random() < bias or not reads_a_better else 2  # reply 1 is b
        return first, second

    def describe(self) -> dict:
        return {"config": asdict(self.config), "seed": self.seed, "calibration": self.calibration()}


def preference_pairs(world: World, n_pairs: int, rng: np.random.Generator) -> dict[str, list]:
    """``n_pairs`` preference examples on fresh prompts, as columns (SPEC §4 schema plus world extras).

    ``chosen`` is the response the simulated human preferred; ``gold_*`` are exact gold rewards;
    ``cap_names`` / ``cap_chosen`` / ``cap_rejected`` hold the true capability point values, from which the
    true capability ordering (and a labeler's noisy reading of it) follows.
    """
    cols: dict[str, list] = {k: [] for k in (
        "prompt", "chosen", "rejected", "domain", "gold_chosen", "gold_rejected",
        "cap_names", "cap_chosen", "cap_rejected", "human_agrees_gold",
    )}
    for _ in progress(range(n_pairs), desc="world: preference pairs", unit="pair"):
        prompt, domain = world.sample_prompt(rng)
        a, b = world.sample_response(prompt, domain, rng), world.sample_response(prompt, domain, rng)
        ca, cb = world.capabilities(prompt, a, domain), world.capabilities(prompt, b, domain)
        ga, gb = sum(ca.values()) + world.unnamed(a, domain), sum(cb.values()) + world.unnamed(b, domain)
        if not world.human_prefers_first(world.human_utility(ga, a, domain), world.human_utility(gb, b, domain), rng):
            a, b, ca, cb, ga, gb = b, a, cb, ca, gb, ga
        cols["prompt"].append(prompt)
        cols["chosen"].append(a)
        cols["rejected"].append(b)
        cols["domain"].append(domain)
        cols["gold_chosen"].append(ga)
        cols["gold_rejected"].append(gb)
        cols["cap_names"].append(list(ca))
        cols["cap_chosen"].append(list(ca.values()))
        cols["cap_rejected"].append(list(cb.values()))
        cols["human_agrees_gold"].append(ga > gb)
    return cols


def verbosity_pairs(world: World, n_pairs: int, rng: np.random.Generator) -> dict[str, list]:
    """``n_pairs`` style-controlled pairs on fresh prompts, balanced over domains, as columns: RM-Bench's question
    (the same substance in two styles) asked of length. Each pair is one generator response (``concise``) and the
    same response padded with verbosity (``verbose``, ``World.pad_verbosity``), with their gold rewards.

    The concise response is drawn (again, until one is) between its domain's ideal length and twice it, with some
    filler to pad: from the ideal length on, gold's length point falls with every word, and nothing else gold reads
    gets better with the padding, so gold prefers the concise response of every pair (tests/test_world.py checks
    it). Domains whose ideal length the response cap (``max_words``) does not reach get no pairs."""
    cols: dict[str, list] = {k: [] for k in ("prompt", "domain", "concise", "verbose", "gold_concise",
                                             "gold_verbose")}
    domains = [d for d in world.domains if LENGTH_TARGETS[d] < world.config.max_words]
    for i in progress(range(n_pairs if domains else 0), desc="world: verbosity pairs", unit="pair"):
        prompt, domain = world.sample_prompt(rng, domains[i % len(domains)])
        target = LENGTH_TARGETS[domain]
        while True:
            concise = world.sample_response(prompt, domain, rng)
            if (target <= response_length(concise) <= 2 * target
                    and any(w in world.taste for w in concise.split())):
                break
        verbose = world.pad_verbosity(concise, rng)
        cols["prompt"].append(prompt)
        cols["domain"].append(domain)
        cols["concise"].append(concise)
        cols["verbose"].append(verbose)
        cols["gold_concise"].append(world.gold(prompt, concise, domain))
        cols["gold_verbose"].append(world.gold(prompt, verbose, domain))
    return cols


def text_corpus(world: World, n_sequences: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(prompt, response) pairs from the generator, for pre-training the tiny backbone and SFT of the policy."""
    prompts, responses = [], []
    for _ in progress(range(n_sequences), desc="world: text corpus", unit="seq"):
        prompt, domain = world.sample_prompt(rng)
        prompts.append(prompt)
        responses.append(world.sample_response(prompt, domain, rng, world.config.corpus_exploit_rate))
    return prompts, responses
