"""The synthetic preference world (SPEC §3). Self-contained: imports nothing else of the harness."""

from .capabilities import CAPABILITY_POINTS, Features, measure, parse_prompt
from .tokenizer import build_tokenizer
from .vocab import DOMAINS
from .world import World, WorldConfig, preference_pairs, text_corpus

__all__ = [
    "CAPABILITY_POINTS", "DOMAINS", "Features", "World", "WorldConfig", "build_tokenizer", "measure",
    "parse_prompt", "preference_pairs", "text_corpus",
]
