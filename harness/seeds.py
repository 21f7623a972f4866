"""The one seed scheme: every random stream of a job is ``derive_seed(job_seed, Stream.X, *indices)``.

A stream is a named purpose (``Stream``) plus a fixed number of integer indices (member, domain, step, chunk).
The name is hashed with BLAKE2b (stable across processes and Python versions, unlike ``hash()``), and numpy's
``SeedSequence`` mixes job seed, name hash and indices into a 64-bit seed. So different (job seed, stream,
indices) give independent seeds: ensemble member i and generation chunk i no longer share one, and job seed
s+1's router no longer trains with job seed s's first domain RM's data order (as ``seed + 1 + d`` did).

Two architectures asking for the same (stream, indices) in one job get the same seed on purpose (common
random numbers): the single RM and ensemble member 0 start from the same head. ``Stream`` lists every stream
the harness uses; tests/test_seeds.py checks that none of them collide for job seeds 0..99.

What draws outside the named streams (code that takes no generator: a library's own initialisation, a module built
on torch's default generator) reads the process-wide generators, which ``set_seed`` seeds with the job seed itself.
"""

from __future__ import annotations

import hashlib
import random
from enum import Enum

import numpy as np
import torch

# numpy's legacy global seeding (np.random.seed, in set_seed) takes 32-bit seeds only: job seeds lie below this.
SEED_LIMIT = 2**32


class Stream(str, Enum):
    """Every named random stream; ``arity`` is how many indices ``derive_seed`` takes after the name."""

    arity: int

    def __new__(cls, name: str, arity: int):
        stream = str.__new__(cls, name)
        stream._value_ = name
        stream.arity = arity
        return stream

    # -- the world and the data
    WORLD_KNOWLEDGE = ("world/knowledge", 0)  # entity -> colour facts
    WORLD_CALIBRATION = ("world/calibration", 0)  # the pairs human / judge temperatures are fitted on
    WORLD_TASTE = ("world/taste", 0)  # the raters' taste per filler word (gold's unnamed part)
    PAIRS = ("data/pairs", 1)  # (split index): synthetic preference pairs of one split
    PROMPT_SPLIT = ("data/prompt_split", 0)  # real data: which prompts go to which split
    CORPUS = ("data/corpus", 0)  # pre-training / SFT text
    EVAL_PROMPTS = ("data/eval_prompts", 0)  # held-out prompts of BoN and PPO
    ORACLE_LABELS = ("labeler/oracle", 1)  # (labeler.seed_offset): the oracle judges' answers
    GOLD_SAMPLES = ("gold/samples", 1)  # (chunk): gold=rm's policy samples to label (Policy.sample)
    GOLD_LABELS = ("gold/labels", 0)  # gold=rm's Bradley-Terry label draws and label noise
    GOLD_FILE_SPLIT = ("gold/file_split", 0)  # gold=rm with a responses file: which prompts go to which split
    VERIFIER_TASKS = ("verifier/tasks", 2)  # (family name's crc32, split index): gold=verifier's task questions
    VERIFIER_SAMPLES = ("verifier/samples", 1)  # (chunk): gold=verifier's policy samples of the task prompts
    VERIFIER_LABELS = ("verifier/labels", 0)  # gold=verifier's pair choice, label noise and length preference
    # -- pre-trained models of the harness
    BACKBONE_INIT = ("backbone/init", 0)  # tiny backbone weights before pre-training
    BACKBONE_BATCHES = ("backbone/batches", 0)  # its pre-training batches
    POLICY_INIT = ("policy/init", 0)  # tiny policy weights before SFT
    POLICY_BATCHES = ("policy/batches", 0)  # its SFT batches
    # -- reward models (roles, not architectures: every architecture draws from the same few)
    RM_INIT = ("rm/init", 1)  # (i): the i-th reward model built from the backbone (new head, LoRA inits)
    RM_ORDER = ("rm/order", 1)  # (i): batch order of that model's Bradley-Terry training
    ROUTER_INIT = ("rm/router_init", 0)  # a domain router's head
    ROUTER_ORDER = ("rm/router_order", 0)  # its batch order
    EXPERT_INIT = ("rm/expert_init", 0)  # noise that breaks the symmetry of upcycled MoE experts
    EXPERT_ORDER = ("rm/expert_order", 2)  # (i, k): batch order of model i's k-th expert adapter
    COMBINER_INIT = ("rm/combiner_init", 1)  # (i): a module that combines model i's experts
    COMBINER_ORDER = ("rm/combiner_order", 1)  # (i): its batch order
    SUBSAMPLE = ("rm/subsample", 0)  # held-out slices and label subsets an architecture carves from train
    # -- optimisation studies
    BON_SAMPLES = ("bon/samples", 1)  # (chunk): one generate() call of Best-of-N sampling (Policy.sample)
    PPO_PROMPTS = ("ppo/prompts", 0)  # which training prompts each rollout uses
    PPO_ROLLOUT = ("ppo/rollout", 1)  # (step): the rollout's generate() call
    PPO_EVAL = ("ppo/eval", 2)  # (step, chunk): generate() calls of an evaluation
    PPO_VALUE_INIT = ("ppo/value_init", 0)  # the value model's new head
    PPO_MINIBATCHES = ("ppo/minibatches", 0)  # minibatch order of the PPO epochs
    WORLD_FACTS = ("capability/world_facts", 0)  # the world_facts lm-eval questions
    TEST_PREFS = ("lmeval/test_prefs", 0)  # the test_prefs lm-eval task's answer order
    STYLE_PAIRS = ("eval/style_pairs", 0)  # the length-bias metric's verbosity pairs (harness/length_bias.py)


def _name_words(stream: Stream) -> tuple[int, int]:
    digest = hashlib.blake2b(stream.value.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def derive_seed(job_seed: int, stream: Stream, *indices: int) -> int:
    """A 64-bit seed for ``stream`` (with its ``stream.arity`` indices) of job ``job_seed``; fits
    ``torch.manual_seed``, ``torch.Generator.manual_seed`` and ``np.random.default_rng``."""
    if not isinstance(stream, Stream):
        raise TypeError(f"derive_seed: stream must be a harness.seeds.Stream, got {stream!r}")
    if len(indices) != stream.arity:
        raise TypeError(f"derive_seed: stream {stream.value!r} takes {stream.arity} indices, got {indices}")
    for value, what in ((job_seed, "seed"), *((i, f"{stream.value} index") for i in indices)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{what}={value!r} must be a non-negative integer")
    # The job seed is the entropy (padded to 128 bits, so any job seed < 2**128 is its own); the name hash and
    # indices go in the spawn key, which SeedSequence mixes in word by word after it.
    sequence = np.random.SeedSequence(int(job_seed), spawn_key=(*_name_words(stream), *map(int, indices)))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def set_seed(seed: int) -> None:
    """Seed the process-wide generators -- Python's ``random``, numpy's legacy global one, torch's default -- with
    ``seed`` (< ``SEED_LIMIT``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
