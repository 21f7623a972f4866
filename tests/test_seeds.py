"""The one seed scheme (harness/seeds.py): independent seeds for every (job seed, stream, indices), used everywhere."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.seeds import Stream, derive_seed, set_seed

HARNESS = Path(__file__).resolve().parents[1] / "harness"
JOB_SEEDS = range(100)
# Index values checked per index position: members/domains/chunks/steps of small and paper-size runs.
INDEX_RANGE = {1: range(64), 2: range(16)}


def stream_keys(stream: Stream):
    return itertools.product(INDEX_RANGE[stream.arity], repeat=stream.arity) if stream.arity else [()]


def test_no_two_streams_or_indices_collide_for_job_seeds_0_to_99():
    seen: dict[int, tuple] = {}
    for job_seed in JOB_SEEDS:
        for stream in Stream:
            for indices in stream_keys(stream):
                key = (job_seed, stream.value, *indices)
                seed = derive_seed(job_seed, stream, *indices)
                assert seed not in seen, f"{key} and {seen[seed]} get the same seed {seed}"
                seen[seed] = key
    assert len(seen) > 100 * len(Stream)


def test_the_two_collisions_of_the_old_scheme_are_gone():
    for s in range(10):
        for i in range(8):
            # Ensemble member i (was SeedSequence([s, i])) vs Best-of-N generation chunk i (the same).
            member = {derive_seed(s, Stream.RM_INIT, i), derive_seed(s, Stream.RM_ORDER, i)}
            assert derive_seed(s, Stream.BON_SAMPLES, i) not in member
        # Job seed s+1's router (was s + 1) vs job seed s's domain-0 RM (was s + 1 + 0).
        assert derive_seed(s + 1, Stream.ROUTER_ORDER) != derive_seed(s, Stream.RM_ORDER, 0)
        assert derive_seed(s + 1, Stream.ROUTER_INIT) != derive_seed(s, Stream.RM_INIT, 0)


def test_seeds_are_stable_across_processes_and_fit_every_rng():
    # Pinned: the stream name is hashed with BLAKE2b, not Python's salted hash(). If this value changes, every
    # cached artifact keyed by a job seed means something else: bump harness.cache.CACHE_FORMAT_VERSION.
    assert derive_seed(0, Stream.RM_INIT, 0) == 17804979960782976967
    assert derive_seed(7, Stream.PPO_EVAL, 3, 1) == derive_seed(7, Stream.PPO_EVAL, 3, 1)
    assert all(0 <= derive_seed(s, Stream.CORPUS) < 2**64 for s in range(20))
    assert Stream("data/pairs") is Stream.PAIRS  # streams are found by name


@pytest.mark.parametrize("call,error", [
    (lambda: derive_seed(0, Stream.RM_INIT), "takes 1 indices"),
    (lambda: derive_seed(0, Stream.CORPUS, 3), "takes 0 indices"),
    (lambda: derive_seed(-1, Stream.CORPUS), "seed=-1 must be a non-negative integer"),
    (lambda: derive_seed(0, Stream.ORACLE_LABELS, -2), "labeler/oracle index=-2"),
    (lambda: derive_seed(0, "data/corpus"), "must be a harness.seeds.Stream"),
])
def test_misuse_fails_clearly(call, error):
    with pytest.raises((TypeError, ValueError), match=re.escape(error)):
        call()


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in HARNESS.rglob("*.py") if p.name != "seeds.py"}


def test_every_stream_is_used_by_the_harness():
    code = "\n".join(_sources().values())
    unused = [s.name for s in Stream if f"Stream.{s.name}" not in code]
    assert not unused, f"streams no code derives from (remove them or use them): {unused}"


def test_no_seed_is_derived_outside_the_scheme():
    """Ad-hoc derivations (stream ids, offsets, a second SeedSequence) would bypass the collision test."""
    patterns = {
        "SeedSequence outside harness/seeds.py": r"SeedSequence",
        "a numpy stream id": r"default_rng\(\s*\[",
        "an additive or multiplicative seed offset": r"\bseed\w*\s*[+*]|[+*]\s*(ctx\.)?seed\b",
        "the raw job seed as a stream": r"(manual_seed|default_rng)\(\s*(ctx|self)\.seed\b",
    }
    found = [f"{path.relative_to(HARNESS.parent)}:{text[:m.start()].count(chr(10)) + 1}: {what}"
             for path, text in _sources().items() for what, pattern in patterns.items()
             for m in re.finditer(pattern, text)]
    assert not found, "\n".join(found)


def test_set_seed_seeds_every_process_wide_generator():
    """The job seed starts Python's, numpy's global and torch's default generators: what draws outside the named
    streams repeats with the seed and changes with it."""

    def draws(seed: int) -> tuple:
        set_seed(seed)
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    first = draws(3)
    assert draws(3) == first
    other = draws(4)
    assert all(a != b for a, b in zip(first, other, strict=True))
