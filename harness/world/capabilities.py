"""Capability points and the gold reward.

Every capability point is a deterministic scorer of (prompt, response) that already carries its domain weight.
The gold reward of a response is the sum of its domain's point values plus a part no point names (the raters'
taste, ``World.unnamed``). A capability *label* for a pair is the sign of the difference of one point's values:
that is what DMoERM's labelers are asked for.

The weights conflict across domains on purpose (multi-task disturbance): warmth (tone words) is rewarded in
roleplay, chit-chat and text creation but penalised in objective QA; hedging is nuance in subjective QA and
evasion in objective QA and roleplay; ending with a question is proactive in roleplay and chit-chat but
undesirable in objective QA and text creation; the ideal length ranges from 8 to 32 words.

Over-optimisation needs features a proxy over-credits and gold punishes nonlinearly: warmth pays up to a few
tone words and falls off a cliff when a response gushes (``warmth``), keyword stuffing raises relevance but is
penalised per stuffed keyword, and repetition is penalised with power 1.5 by "fluency".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .vocab import COLOURS, HEDGES, TONE

_TONE = frozenset(TONE)
_HEDGES = frozenset(HEDGES)
_COLOURS = frozenset(COLOURS)


@dataclass(frozen=True)
class ParsedPrompt:
    keywords: tuple[str, ...]
    entity: str | None  # objective-QA prompts ask for this entity's colour


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Recover keywords and the asked-about entity from a world prompt's text."""
    words = prompt.split()
    keywords: list[str] = []
    if "about" in words:
        for w in words[words.index("about") + 1 :]:
            if w in (".", "?"):
                break
            keywords.append(w)
    entity = None
    if "colour" in words and words[-1] == "?":
        entity = words[-2]
    return ParsedPrompt(tuple(keywords), entity)


@dataclass(frozen=True)
class Features:
    """Raw, unweighted measurements of a response; capability points are functions of these."""

    n_words: int
    coverage: float  # fraction of prompt keywords mentioned
    stuffed: int  # keyword mentions beyond two per keyword
    repeats: int  # bigram occurrences beyond the first (repeated phrases)
    tone: int
    hedges: int
    question: int  # 1 if the response ends with "?"
    richness: float  # distinct words / words
    correctness: int  # +1 right colour, -1 wrong colour, 0 no colour (objective QA only)


def body_words(words: list[str]) -> list[str]:
    """A response's words less its punctuation marks: what every length in the world counts."""
    return [w for w in words if w not in (".", "?")]


def response_length(response: str) -> int:
    """A response's length in words (punctuation marks aside): gold's length points, the raters' length preference
    (``WorldConfig.human_length_share``) and the length-bias metrics (harness/length_bias.py) all count this."""
    return len(body_words(response.split()))


def measure(prompt: str | ParsedPrompt, response: str, knowledge: dict[str, str]) -> Features:
    parsed = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    words = response.split()
    body = body_words(words)
    counts = Counter(body)
    kws = set(parsed.keywords)
    coverage = sum(1 for k in kws if counts[k] > 0) / len(kws) if kws else 0.0
    stuffed = sum(max(0, counts[k] - 2) for k in kws)
    bigrams = Counter(zip(body, body[1:], strict=False))
    repeats = sum(c - 1 for c in bigrams.values())
    correctness = 0
    if parsed.entity is not None:
        said = [w for w in body if w in _COLOURS]
        if said:
            correctness = 1 if said[0] == knowledge.get(parsed.entity) else -1
    return Features(
        n_words=len(body),
        coverage=coverage,
        stuffed=stuffed,
        repeats=repeats,
        tone=sum(1 for w in body if w in _TONE),
        hedges=sum(1 for w in body if w in _HEDGES),
        question=int(bool(words) and words[-1] == "?"),
        richness=len(counts) / len(body) if body else 0.0,
        correctness=correctness,
    )


def saturating(x: float, peak: float) -> float:
    """x(2c - x)/c^2: 0 at 0, 1 at the peak c, 0 again at 2c and negative beyond: a little helps, a lot hurts."""
    return x * (2 * peak - x) / peak**2


def length_fit(n: int, target: float) -> float:
    return math.exp(-(((n - target) / (0.5 * target)) ** 2))


def fluency(f: Features) -> float:
    # The exploit the proxy misses most: repeated phrases, penalised superlinearly.
    return -(0.5 * f.stuffed + 0.4 * f.repeats**1.5)


def warmth(tone: int) -> float:
    """Enthusiasm: each tone word helps up to TONE_ENOUGH, more adds nothing, and past TONE_GUSHING every extra
    word costs TONE_GUSHING_COST (gushing reads as insincere): 0 at 0, 1 from TONE_ENOUGH to TONE_GUSHING, then
    falling. Ordinary responses (a Poisson(1.8) count) hardly reach the cliff; tone stuffing goes over it — a regime
    the preference data does not show, so an RM extrapolates "more is better" there (extremal Goodhart)."""
    return min(tone, TONE_ENOUGH) / TONE_ENOUGH - TONE_GUSHING_COST * max(0, tone - TONE_GUSHING)


TONE_ENOUGH = 6
TONE_GUSHING = 7
TONE_GUSHING_COST = 0.5

# Per domain: capability point -> weighted scorer of Features. Weights are the gold's; names are what a
# labeler is asked about. Length targets: roleplay 22, chit-chat 10, subjective QA 18, objective QA 8,
# text creation 32 words.
CAPABILITY_POINTS = {
    "roleplay": {
        "relevance": lambda f: 1.0 * f.coverage,
        "engagement": lambda f: 3.0 * warmth(f.tone),
        "proactivity": lambda f: 2.0 * f.question,
        "length": lambda f: 1.5 * length_fit(f.n_words, 22),
        "decisiveness": lambda f: -1.5 * f.hedges,
        "fluency": fluency,
    },
    "chitchat": {
        "relevance": lambda f: 0.5 * f.coverage,
        "engagement": lambda f: 2.5 * warmth(f.tone),
        "proactivity": lambda f: 3.0 * f.question,
        "brevity": lambda f: 2.0 * length_fit(f.n_words, 10),
        "fluency": fluency,
    },
    "subjective_qa": {
        "relevance": lambda f: 1.0 * f.coverage,
        "nuance": lambda f: 3.0 * saturating(f.hedges, 2),
        "length": lambda f: 1.0 * length_fit(f.n_words, 18),
        "richness": lambda f: 1.0 * f.richness,
        "fluency": fluency,
    },
    "objective_qa": {
        "correctness": lambda f: 3.0 * f.correctness,
        "relevance": lambda f: 0.5 * f.coverage,
        "conciseness": lambda f: 1.0 * length_fit(f.n_words, 8),
        "neutrality": lambda f: -1.2 * f.tone - 2.5 * f.question,
        "decisiveness": lambda f: -1.5 * f.hedges,
        "fluency": fluency,
    },
    "text_creation": {
        "relevance": lambda f: 1.0 * f.coverage,
        "richness": lambda f: 1.0 * f.richness,
        "length": lambda f: 2.0 * length_fit(f.n_words, 32),
        "vividness": lambda f: 2.5 * warmth(f.tone),
        "closure": lambda f: -2.5 * f.question,
        "fluency": fluency,
    },
}

LENGTH_TARGETS = {"roleplay": 22, "chitchat": 10, "subjective_qa": 18, "objective_qa": 8, "text_creation": 32}


def capability_values(domain: str, features: Features) -> dict[str, float]:
    return {name: float(score(features)) for name, score in CAPABILITY_POINTS[domain].items()}


def gold_reward(domain: str, features: Features) -> float:
    return sum(capability_values(domain, features).values())
