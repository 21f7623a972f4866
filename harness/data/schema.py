"""The preference-example schema and its tokenized form.

A preference split is a ``datasets.Dataset`` with columns ``prompt``, ``chosen``, ``rejected`` and ``domain``
(empty string when unknown), plus optional ``gold_chosen``/``gold_rejected`` (synthetic only) and capability
columns. For training and scoring it is tokenized once into right-padded tensors (``EncodedPairs``); a batch
slices them to its own longest sequence, so padding is paid per batch, not per data set.

Truncation keeps the response: a text over the backbone's ``max_length`` loses the start of its prompt first (the
template's and the tokenizer's own tokens stay); only a response too long on its own is cut at its end. A pair
whose chosen and rejected inputs end up the same token sequence carries no preference an RM can see: the job
counts such pairs per split, reports them, and leaves them out of training (``input_report``,
``drop_identical_inputs``); in evaluation they stay, and a tie counts wrong.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# Characters of a text kept per token of max_length before tokenizing: a prompt keeps its last, a response its
# first max_length * MAX_CHARS_PER_TOKEN characters. Tokenizing a huge field in full costs time and memory for
# tokens the truncation throws away (one 50 MB field: 133 s and 7.8 GB); text averages 3-6 characters per token,
# so the cut leaves far more than max_length tokens and does not change what the model reads.
MAX_CHARS_PER_TOKEN = 32
# Prompt cuts tried before the text's end is cut instead: one is exact for the word-level tiny tokenizer; a subword
# merge across the cut can leave a token or two over, which the next try removes.
PROMPT_FIT_TRIES = 4

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Batch:
    """What a reward model's forward reads: B token sequences, and their prompts alone (for routers)."""

    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    prompt_ids: torch.Tensor  # (B, Tp) right-padded
    prompt_mask: torch.Tensor  # (B, Tp)
    domain: torch.Tensor  # (B,) domain index, -1 unknown

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device`` (the job's ``device`` key); tensors already there are not copied."""
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


@dataclass
class EncodedSequences:
    """Tokenized (prompt, response) sequences with their prompts; right-padded."""

    ids: torch.Tensor  # (N, L)
    lengths: torch.Tensor  # (N,)
    prompt_ids: torch.Tensor  # (N, Lp)
    prompt_lengths: torch.Tensor  # (N,)
    domain: torch.Tensor  # (N,)
    truncated: torch.Tensor | None = None  # (N,) bool: the text was cut to max_length (set by encoding)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batch(self, idx: torch.Tensor) -> Batch:
        T = int(self.lengths[idx].max())
        Tp = int(self.prompt_lengths[idx].max())
        ids, pids = self.ids[idx, :T], self.prompt_ids[idx, :Tp]
        positions = torch.arange(T)
        ppositions = torch.arange(Tp)
        return Batch(
            input_ids=ids,
            attention_mask=(positions[None, :] < self.lengths[idx, None]).long(),
            prompt_ids=pids,
            prompt_mask=(ppositions[None, :] < self.prompt_lengths[idx, None]).long(),
            domain=self.domain[idx],
        )

    def subset(self, idx: torch.Tensor) -> EncodedSequences:
        return EncodedSequences(self.ids[idx], self.lengths[idx], self.prompt_ids[idx], self.prompt_lengths[idx],
                                self.domain[idx], None if self.truncated is None else self.truncated[idx])

    def length_sorted_batches(self, batch_size: int) -> list[torch.Tensor]:
        """Index batches in length order, for scoring (no gradient, so order does not matter)."""
        order = torch.argsort(self.lengths, stable=True)
        return list(order.split(batch_size))


@dataclass
class EncodedPairs:
    chosen: EncodedSequences
    rejected: EncodedSequences

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, idx: torch.Tensor) -> Batch:
        """One batch of 2B sequences, chosen first then rejected, padded to a shared length (one forward)."""
        T = int(torch.maximum(self.chosen.lengths[idx], self.rejected.lengths[idx]).max())
        Tp = int(self.chosen.prompt_lengths[idx].max())
        ids = torch.cat([self.chosen.ids[idx, :T], self.rejected.ids[idx, :T]])
        lengths = torch.cat([self.chosen.lengths[idx], self.rejected.lengths[idx]])
        pids = self.chosen.prompt_ids[idx, :Tp].repeat(2, 1)
        plengths = self.chosen.prompt_lengths[idx].repeat(2)
        return Batch(
            input_ids=ids,
            attention_mask=(torch.arange(T)[None, :] < lengths[:, None]).long(),
            prompt_ids=pids,
            prompt_mask=(torch.arange(Tp)[None, :] < plengths[:, None]).long(),
            domain=self.chosen.domain[idx].repeat(2),
        )

    def subset(self, idx: torch.Tensor) -> EncodedPairs:
        return EncodedPairs(self.chosen.subset(idx), self.rejected.subset(idx))

    def bucketed_batches(self, batch_size: int, generator: torch.Generator, chunk_batches: int) -> list[torch.Tensor]:
        """Shuffle, cut into chunks of ``chunk_batches`` batches, sort each chunk by pair length, split into
        batches and shuffle the batch order: less padding than random batches, still a random order."""
        perm = torch.randperm(len(self), generator=generator)
        pair_len = torch.maximum(self.chosen.lengths, self.rejected.lengths)
        return length_grouped(perm, pair_len, batch_size, chunk_batches, generator)


def length_grouped(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, chunk_batches: int,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """``order`` (random row indices) cut into chunks of ``chunk_batches`` batches, each chunk sorted by
    ``lengths`` and split into batches of ``batch_size``, then the batch order shuffled: a batch is padded only to
    its own longest row (HF Trainer's group_by_length), and the order stays random."""
    batches: list[torch.Tensor] = []
    chunk = batch_size * max(1, chunk_batches)
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part.split(batch_size))
    shuffle = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in shuffle]


def bounded(text: str, max_length: int, keep: str) -> str:
    """``text`` cut to max_length * MAX_CHARS_PER_TOKEN characters, keeping its ``start`` or ``end``."""
    limit = max_length * MAX_CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    return text[:limit] if keep == "start" else text[-limit:]


def _token_starts(tokenizer, text: str) -> list[int]:
    """The character offset at which each token of ``text`` starts (estimated by a slow tokenizer)."""
    if tokenizer.is_fast:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [start for start, _ in enc["offset_mapping"]]
    n = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    return [len(text) * i // n for i in range(n)]


def fit_prompt(tokenizer, render: Callable[[str], str], prompt: str, max_length: int) -> str:
    """The longest end of ``prompt`` with which ``render(prompt)`` tokenizes to at most ``max_length`` tokens; ""
    when even the whole prompt's removal is not enough (the rest of the text is cut at its end instead)."""
    for _ in range(PROMPT_FIT_TRIES):
        excess = len(tokenizer(render(prompt), verbose=False)["input_ids"]) - max_length
        if excess <= 0:
            return prompt
        starts = _token_starts(tokenizer, prompt)
        if excess >= len(starts):
            return ""
        prompt = prompt[starts[excess]:]
    return prompt


def encode_texts(tokenizer, render: Callable[[str, str], str], prompts, responses,
                 max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``render(prompt, response)`` for every pair, tokenized (an over-long text again once its prompt is cut),
    truncated on the prompt side to ``max_length`` tokens (see the module docstring) and right-padded: ids (N, L),
    lengths (N,), truncated (N,) bool."""
    cut_prompts = [bounded(p, max_length, keep="end") for p in prompts]
    cut_responses = [bounded(r, max_length, keep="start") for r in responses]
    truncated = [len(a) < len(b) or len(c) < len(d)
                 for a, b, c, d in zip(cut_prompts, prompts, cut_responses, responses, strict=True)]
    texts = [render(p, r) for p, r in zip(cut_prompts, cut_responses, strict=True)]
    ids = tokenizer(texts, verbose=False)["input_ids"] if texts else []
    for i, seq in enumerate(ids):
        if len(seq) > max_length:
            response = cut_responses[i]
            prompt = fit_prompt(tokenizer, lambda p: render(p, response), cut_prompts[i], max_length)  # noqa: B023
            ids[i] = tokenizer(render(prompt, response), truncation=True, max_length=max_length,
                               verbose=False)["input_ids"]
            truncated[i] = True
    lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
    padded = torch.full((len(ids), int(lengths.max()) if len(ids) else 0), tokenizer.pad_token_id, dtype=torch.long)
    for i, seq in enumerate(ids):
        padded[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return padded, lengths, torch.tensor(truncated, dtype=torch.bool)


def encode_sequences(tokenizer, join, prompts, responses, domains, domain_index, max_length) -> EncodedSequences:
    """(prompt, response) sequences as ``join`` renders them, with their prompts alone (router input); both
    truncated on the prompt side."""
    ids, lengths, truncated = encode_texts(tokenizer, join, prompts, responses, max_length)
    prompt_ids, prompt_lengths, _ = encode_texts(tokenizer, lambda p, _: p, prompts, [""] * len(prompts),
                                                 max_length)
    dom = torch.tensor([domain_index.get(d, -1) for d in domains], dtype=torch.long)
    return EncodedSequences(ids, lengths, prompt_ids, prompt_lengths, dom, truncated)


def encode_pairs(dataset, tokenizer, join, domains: list[str], max_length: int) -> EncodedPairs:
    index = {d: i for i, d in enumerate(domains)}
    # Plain lists, read at once (a datasets Column is read row by row on every pass, and encoding makes several).
    names = [c for c in ("prompt", "chosen", "rejected", "domain") if c in dataset.column_names]
    cols = dataset.select_columns(names)[:]
    dom = cols["domain"] if "domain" in cols else [""] * len(dataset)
    chosen = encode_sequences(tokenizer, join, cols["prompt"], cols["chosen"], dom, index, max_length)
    rejected = encode_sequences(tokenizer, join, cols["prompt"], cols["rejected"], dom, index, max_length)
    # A pair batch slices both sides to one shared length: give them one shared width.
    width = max(chosen.ids.shape[1], rejected.ids.shape[1])
    pad = tokenizer.pad_token_id
    for side in (chosen, rejected):
        side.ids = torch.nn.functional.pad(side.ids, (0, width - side.ids.shape[1]), value=pad)
    return EncodedPairs(chosen, rejected)


def identical_inputs(pairs: EncodedPairs) -> torch.Tensor:
    """(N,) bool: the pairs whose chosen and rejected inputs are the same token sequence."""
    c, r = pairs.chosen, pairs.rejected
    return (c.lengths == r.lengths) & (c.ids == r.ids).all(dim=1)


def input_report(pairs: EncodedPairs, split: str, max_length: int) -> dict:
    """Counts of one encoded split for the log and metrics.json: pairs, pairs with a side cut to max_length,
    pairs whose two inputs are identical, and how many of those only became identical by the cut."""
    truncated = pairs.chosen.truncated | pairs.rejected.truncated
    identical = identical_inputs(pairs)
    report = {"pairs": len(pairs), "truncated": int(truncated.sum()), "identical": int(identical.sum()),
              "identical_after_truncation": int((identical & truncated).sum())}
    if report["truncated"]:
        log.info("%s: %d of %d pairs longer than backbone.max_length=%d tokens, truncated on the prompt side",
                 split, report["truncated"], len(pairs), max_length)
    if report["identical"]:
        log.warning("%s: %d of %d pairs have identical chosen and rejected inputs (%d of them by truncation to "
                    "backbone.max_length=%d): no preference to learn; a tie counts wrong in evaluation", split,
                    report["identical"], len(pairs), report["identical_after_truncation"], max_length)
    return report


def drop_identical_inputs(pairs: EncodedPairs, dataset, max_length: int) -> tuple[EncodedPairs, object, int]:
    """Training without the pairs whose two inputs are identical (they give no gradient, only dilute the loss):
    the encoded pairs and the raw split, kept row-aligned, and how many were dropped."""
    keep = (~identical_inputs(pairs)).nonzero(as_tuple=True)[0]
    dropped = len(pairs) - len(keep)
    if dropped == 0:
        return pairs, dataset, 0
    if len(keep) == 0:
        raise ValueError(f"every one of the {len(pairs)} training pairs has identical chosen and rejected inputs "
                         f"after tokenization at backbone.max_length={max_length}: nothing to learn")
    log.warning("train: %d pairs with identical inputs left out of training", dropped)
    return pairs.subset(keep), dataset.select(keep.tolist()), dropped
