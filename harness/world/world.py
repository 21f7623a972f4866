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

# Bump whenever the world's semantics change (vocabulary, scorers, weights, generator): it is part of every
# cache key derived from world data, so artifacts built by an older world are never reused.
WORLD_VERSION = 2


@dataclass
class WorldConfig:
    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    marker_rate: float = 0.2  # chance a prompt names its domain; low, so the task category is a weak cue
    domain_topic_rate: float = 0.5  # chance each keyword comes from the domain's own topic pool
    max_words: int = 40  # response cap; keeps sequences short (cost grows with length squared)
    exploit_rate: float = 0.03  # chance of each exploit kind per response (stuffing, tone, repetition, long)
    human_agreement: float = 0.70  # target P(human label == gold order) on random pairs
    human_flip_rate: float = 0.0  # extra uniform label flips on top of Bradley-Terry sampling
    judge_noise: float = 0.3  # capability judge's Bradley-Terry temperature, in units of the point's spread
    judge_position_bias: float = 0.15  # chance a judge answers "the first one" whatever it reads
    calibration_pairs: int = 4000

    def validate(self) -> None:
        # Types first: a string or a list from the command line would otherwise fail deep inside, unnamed.
        if not isinstance(self.domains, (list, tuple)) or not all(isinstance(d, str) for d in self.domains):
            raise ValueError(f"data.world.domains={self.domains!r} must be a list of domain names; valid: "
                             f"{list(DOMAINS)}")
        for key in ("marker_rate", "domain_topic_rate", "exploit_rate", "human_agreement", "human_flip_rate",
                    "judge_noise", "judge_position_bias"):
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
            "human_agreement": (0.5, 1.0),
            "human_flip_rate": (0.0, 0.5),
            "judge_position_bias": (0.0, 1.0),
        }
        for key, (lo, hi) in checks.items():
            v = getattr(self, key)
            if not lo <= v <= hi:
                raise ValueError(f"data.world.{key}={v} is outside [{lo}, {hi}]")
        if self.judge_noise <= 0:
            raise ValueError(f"data.world.judge_noise={self.judge_noise} must be > 0")
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


class World:
    def __init__(self, config: WorldConfig, seed: int, temperatures: tuple[float, dict] | None = None):
        """``temperatures``: a previous ``calibration()`` of the same config and seed, to skip recalibrating."""
        config.validate()
        self.config = config
        self.seed = seed
        self.domains = list(config.domains)
        kb_rng = np.random.default_rng(derive_seed(seed, Stream.WORLD_KNOWLEDGE))
        self.knowledge = {e: str(kb_rng.choice(COLOURS)) for e in ENTITIES}
        self.human_temperature, self.judge_temperatures = temperatures or self._calibrate()

    def calibration(self) -> tuple[float, dict]:
        return self.human_temperature, dict(self.judge_temperatures)

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
    def sample_response(self, prompt: str, domain: str, rng: np.random.Generator) -> str:
        """A response from the world's generator: random quality knobs, and rare exploits."""
        cfg = self.config
        parsed = parse_prompt(prompt)
        target = LENGTH_TARGETS[domain]
        n_words = int(round(target * rng.lognormal(0.0, 0.3) * rng.uniform(0.5, 1.6)))
        cover = rng.uniform(0.0, 1.0)  # how on-topic this response is
        keywords = [k for k, u in zip(parsed.keywords, rng.random(len(parsed.keywords)), strict=True) if u < cover]
        tone = picks(rng, TONE, rng.poisson(1.8))
        hedges = picks(rng, HEDGES, rng.poisson(1.2))
        exploit = rng.random(4) < cfg.exploit_rate
        if exploit[0]:  # keyword stuffing
            keywords = [k for k in parsed.keywords for _ in range(int(rng.integers(3, 7)))]
        if exploit[1]:  # tone stuffing
            tone = picks(rng, TONE, int(rng.integers(6, 13)))
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
        if exploit[2] and len(words) >= 2:  # a phrase repeated several times in a row
            at = int(rng.integers(0, len(words) - 1))
            phrase = words[at : at + 2]
            words[at:at] = phrase * int(rng.integers(3, 7))
        words = words[: cfg.max_words - 1] if words else [pick(rng, FILLER)]
        words.append("?" if rng.random() < 0.4 else ".")
        return " ".join(words)

    # ----------------------------------------------------------------------------------- gold
    def features(self, prompt: str, response: str):
        return measure(prompt, response, self.knowledge)

    def gold(self, prompt: str, response: str, domain: str) -> float:
        return gold_reward(domain, self.features(prompt, response))

    def capabilities(self, prompt: str, response: str, domain: str) -> dict[str, float]:
        return capability_values(domain, self.features(prompt, response))

    def capability_names(self, domain: str) -> list[str]:
        return list(CAPABILITY_POINTS[domain])

    # ----------------------------------------------------------------------------------- annotators
    def _calibrate(self) -> tuple[float, dict[str, float]]:
        """Bradley-Terry temperatures for humans (to hit the target agreement) and judges (per point spread).

        Uses the *expected* agreement mean(sigmoid(|dg|/T)) on a fixed sample of random pairs, a smooth and
        monotone function of T, so bisection is exact and deterministic.
        """
        cfg = self.config
        rng = np.random.default_rng(derive_seed(self.seed, Stream.WORLD_CALIBRATION))
        gold_gaps, point_gaps = [], {}
        for _ in progress(range(cfg.calibration_pairs), desc="world: calibrating annotators", unit="pair"):
            prompt, domain = self.sample_prompt(rng)
            a, b = (self.sample_response(prompt, domain, rng) for _ in range(2))
            ca, cb = self.capabilities(prompt, a, domain), self.capabilities(prompt, b, domain)
            gold_gaps.append(abs(sum(ca.values()) - sum(cb.values())))
            for name in ca:
                point_gaps.setdefault(name, []).append(abs(ca[name] - cb[name]))
        gaps = np.asarray(gold_gaps)
        # With flip rate f, agreement = (1-f) * E[sigmoid] + f * (1 - E[sigmoid]).
        f = cfg.human_flip_rate
        if cfg.human_agreement >= 1.0 - f - 1e-9 and f > 0:
            raise ValueError(
                f"data.world.human_agreement={cfg.human_agreement} is unreachable with human_flip_rate={f}"
            )
        target = (cfg.human_agreement - f) / (1 - 2 * f) if f < 0.5 else 0.5
        nonzero = gaps[gaps > 0]
        tie_share = 1 - len(nonzero) / len(gaps)
        lo, hi = 1e-4, 1e4
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            agree = (1 - tie_share) * float(_sigmoid(nonzero / mid).mean()) + tie_share * 0.5
            lo, hi = (mid, hi) if agree > target else (lo, mid)
        judge_t = {n: cfg.judge_noise * (float(np.std(g)) or 1.0) for n, g in point_gaps.items()}
        return math.sqrt(lo * hi), judge_t

    def human_prefers_first(self, gold_a: float, gold_b: float, rng: np.random.Generator) -> bool:
        p = float(_sigmoid(np.asarray((gold_a - gold_b) / self.human_temperature)))
        first = rng.random() < p
        if rng.random() < self.config.human_flip_rate:
            first = not first
        return first

    def judge(self, value_first: float, value_second: float, point: str, rng: np.random.Generator) -> int:
        """One capability judgement: +1 if the judge says the first response is better on ``point``, else -1.

        A judge reads noisily (Bradley-Terry on the point's value) and sometimes just picks the first answer
        (position bias) — the swap-and-agree rule of DMoERM exists to filter exactly that.
        """
        if rng.random() < self.config.judge_position_bias:
            return 1
        p = float(_sigmoid(np.asarray((value_first - value_second) / self.judge_temperatures[point])))
        return 1 if rng.random() < p else -1

    def describe(self) -> dict:
        return {
            "config": asdict(self.config),
            "seed": self.seed,
            "human_temperature": self.human_temperature,
            "judge_temperatures": self.judge_temperatures,
        }


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
        ga, gb = sum(ca.values()), sum(cb.values())
        if not world.human_prefers_first(ga, gb, rng):
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


def text_corpus(world: World, n_sequences: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(prompt, response) pairs from the generator, for pre-training the tiny backbone and SFT of the policy."""
    prompts, responses = [], []
    for _ in progress(range(n_sequences), desc="world: text corpus", unit="seq"):
        prompt, domain = world.sample_prompt(rng)
        prompts.append(prompt)
        responses.append(world.sample_response(prompt, domain, rng))
    return prompts, responses
