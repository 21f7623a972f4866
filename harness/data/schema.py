"""The preference-example schema and its tokenized form.

A preference split is a ``datasets.Dataset`` with columns ``prompt``, ``chosen``, ``rejected`` and ``domain``
(empty string when unknown), plus optional ``gold_chosen``/``gold_rejected`` (synthetic only) and capability
columns. For training and scoring it is tokenized once into right-padded tensors (``EncodedPairs``); a batch
slices them to its own longest sequence, so padding is paid per batch, not per data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


@dataclass
class EncodedSequences:
    """Tokenized (prompt, response) sequences with their prompts; right-padded."""

    ids: torch.Tensor  # (N, L)
    lengths: torch.Tensor  # (N,)
    prompt_ids: torch.Tensor  # (N, Lp)
    prompt_lengths: torch.Tensor  # (N,)
    domain: torch.Tensor  # (N,)

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
        def take(s: EncodedSequences) -> EncodedSequences:
            return EncodedSequences(s.ids[idx], s.lengths[idx], s.prompt_ids[idx], s.prompt_lengths[idx],
                                    s.domain[idx])

        return EncodedPairs(take(self.chosen), take(self.rejected))

    def bucketed_batches(self, batch_size: int, generator: torch.Generator, chunk_batches: int) -> list[torch.Tensor]:
        """Shuffle, cut into chunks of ``chunk_batches`` batches, sort each chunk by pair length, split into
        batches and shuffle the batch order: less padding than random batches, still a random order."""
        n = len(self)
        perm = torch.randperm(n, generator=generator)
        pair_len = torch.maximum(self.chosen.lengths, self.rejected.lengths)
        batches: list[torch.Tensor] = []
        chunk = batch_size * max(1, chunk_batches)
        for start in range(0, n, chunk):
            part = perm[start : start + chunk]
            part = part[torch.argsort(pair_len[part], stable=True)]
            batches.extend(part.split(batch_size))
        order = torch.randperm(len(batches), generator=generator)
        return [batches[i] for i in order]


def encode_sequences(tokenizer, join, prompts, responses, domains, domain_index, max_length) -> EncodedSequences:
    texts = [join(p, r) for p, r in zip(prompts, responses, strict=True)]
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="longest", return_tensors="pt")
    penc = tokenizer(list(prompts), truncation=True, max_length=max_length, padding="longest",
                     return_tensors="pt")
    dom = torch.tensor([domain_index.get(d, -1) for d in domains], dtype=torch.long)
    return EncodedSequences(enc["input_ids"], enc["attention_mask"].sum(1), penc["input_ids"],
                            penc["attention_mask"].sum(1), dom)


def encode_pairs(dataset, tokenizer, join, domains: list[str], max_length: int) -> EncodedPairs:
    index = {d: i for i, d in enumerate(domains)}
    dom = dataset["domain"] if "domain" in dataset.column_names else [""] * len(dataset)
    prompts = dataset["prompt"]
    chosen = encode_sequences(tokenizer, join, prompts, dataset["chosen"], dom, index, max_length)
    rejected = encode_sequences(tokenizer, join, prompts, dataset["rejected"], dom, index, max_length)
    # A pair batch slices both sides to one shared length: give them one shared width.
    width = max(chosen.ids.shape[1], rejected.ids.shape[1])
    pad = tokenizer.pad_token_id
    for side in (chosen, rejected):
        side.ids = torch.nn.functional.pad(side.ids, (0, width - side.ids.shape[1]), value=pad)
    return EncodedPairs(chosen, rejected)
