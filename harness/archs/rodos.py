"""rodos (Namgoong et al., "Router for DOmain-specific reward modelS"): an external domain router plus n full
domain reward models; a (prompt, response) is scored by the RM of the domain the router picks (hard argmax).

The router is the backbone with a classification head over domains that reads the PROMPT only (real prompts do
not announce their task category: predicting it is the router's job). Each domain RM is a full copy of the
backbone with a scalar head, trained with the Bradley-Terry loss on its own domain's pairs only. Every model is
stored: total = router + n RMs; a scored response touches the router and one RM.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.schema import Batch, EncodedPairs, EncodedSequences
from ..seeds import Stream, derive_seed
from .base import (
    FitContext,
    RewardModel,
    RewardOutput,
    classifier_accuracy,
    train_bradley_terry,
    train_classifier,
)


def require_domains(name: str, pairs: EncodedPairs, split: str, n_domains: int) -> None:
    """Routing by domain needs a domain label on every pair: say so plainly instead of training on -1."""
    missing = int((pairs.chosen.domain < 0).sum())
    if missing:
        raise ValueError(
            f"arch={name} needs a domain label on every preference pair (data column `domain`): {missing} of "
            f"{len(pairs)} {split} pairs have none. Use data that carries `domain` (data=synthetic, or a jsonl/hf "
            f"source with a `domain` column), or an architecture without a domain router (e.g. arch=single)."
        )
    if int(pairs.chosen.domain.max()) >= n_domains:
        raise ValueError(f"arch={name}: {split} has domain index {int(pairs.chosen.domain.max())} but only "
                         f"{n_domains} domains are known")


class RODOS(RewardModel):
    def __init__(self):
        super().__init__()
        self.router = None  # *ForSequenceClassification with n_domains outputs, built in build()
        self.experts = nn.ModuleList()  # one full domain RM per domain
        self.domains: list[str] = []
        self.router_metrics: dict = {}

    def build(self, ctx: FitContext, seed: int) -> RODOS:
        self.domains = list(ctx.domains)
        n = len(self.domains)
        if n < 2:
            raise ValueError(f"arch=rodos needs at least 2 domains to route between, got {self.domains}")
        self.router = ctx.backbone.reward_model(derive_seed(seed, Stream.ROUTER_INIT), num_labels=n)
        # Each domain RM's head starts from its own draw: domain d's RM is model d of the job.
        self.experts = nn.ModuleList(ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, d)) for d in range(n))
        return self

    # -- the two passes -----------------------------------------------------------------------------
    def router_logits(self, batch: Batch) -> torch.Tensor:
        """(B, n_domains) domain logits from the prompt alone, pooled at its last real token."""
        return self.router(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, use_cache=False).logits

    def expert_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        T = int(attention_mask.sum(1).max())  # rows routed here may be shorter than the batch: trim padding
        logits = self.experts[d](input_ids=input_ids[:, :T], attention_mask=attention_mask[:, :T],
                                 use_cache=False).logits  # (b, 1)
        return logits.squeeze(-1)

    def forward(self, batch: Batch) -> RewardOutput:
        probs = self.router_logits(batch).float().softmax(-1)  # (B, n)
        domain_prob, domain = probs.max(-1)  # hard top-1 routing, (B,) each
        reward = torch.zeros(len(batch), dtype=torch.float32, device=batch.input_ids.device)
        # Each domain RM runs once per batch, on the rows routed to it (unrouted RMs are not touched).
        for d in domain.unique().tolist():
            rows = (domain == d).nonzero(as_tuple=True)[0]
            reward = reward.index_put((rows,), self.expert_reward(d, batch.input_ids[rows],
                                                                  batch.attention_mask[rows]).float())
        return RewardOutput(reward=reward, info={"domain": domain, "domain_prob": domain_prob})

    # -- training -----------------------------------------------------------------------------------
    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        n = len(ctx.domains)
        require_domains("rodos", train, "train", n)
        require_domains("rodos", val, "val", n)
        self.build(ctx, ctx.seed)

        # Router: cross-entropy over domains on the training prompts (the chosen side carries prompt + domain).
        result = train_classifier(self, list(self.router.parameters()), self.router_logits, train.chosen,
                                  val.chosen, ctx.train, derive_seed(ctx.seed, Stream.ROUTER_ORDER), ctx,
                                  phase="rodos/router")
        ctx.log(result)
        self.router_metrics = {"val_accuracy": self.router_accuracy(val.chosen),
                               "val_per_domain": self.router_accuracy_per_domain(val.chosen)}

        # Domain RMs: each trained (and early-stopped) on its own domain's pairs only.
        for d, name in enumerate(self.domains):
            train_d = train.subset((train.chosen.domain == d).nonzero(as_tuple=True)[0])
            val_idx = (val.chosen.domain == d).nonzero(as_tuple=True)[0]
            if len(train_d) == 0:
                raise ValueError(f"arch=rodos: domain {name!r} has no training pairs, so it cannot get an RM")
            expert = self.experts[d]

            def forward(batch: Batch, expert=expert) -> RewardOutput:
                return RewardOutput(reward=expert(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                  use_cache=False).logits.squeeze(-1))

            result = train_bradley_terry(self, list(expert.parameters()), train_d,
                                         val.subset(val_idx) if len(val_idx) else None, ctx.train,
                                         derive_seed(ctx.seed, Stream.RM_ORDER, d), ctx, phase=f"rodos/{name}",
                                         forward=forward)
            ctx.log(result)

    # -- reporting ----------------------------------------------------------------------------------
    def router_accuracy(self, seqs: EncodedSequences) -> float:
        """Fraction of prompts the router sends to their labelled domain (top-1)."""
        return classifier_accuracy(self.router_logits, seqs, self)

    def router_accuracy_per_domain(self, seqs: EncodedSequences) -> dict[str, float]:
        out = {}
        for d, name in enumerate(self.domains):
            idx = (seqs.domain == d).nonzero(as_tuple=True)[0]
            if len(idx):
                out[name] = classifier_accuracy(self.router_logits, subset_sequences(seqs, idx), self)
        return out

    def extra_metrics(self, test: EncodedPairs, dataset) -> dict:
        """Router accuracy (val, and test where the test pairs carry domains), and "oracle_routing": accuracy when
        each test pair is scored by its TRUE domain's reward model — the ceiling a perfect router would reach, so
        the gap to the job's accuracy is what routing errors cost."""
        router = dict(self.router_metrics)
        if (test.chosen.domain < 0).any():  # unlabelled test pairs can be routed and scored, not checked
            return {"router": router}
        router["test_accuracy"] = self.router_accuracy(test.chosen)
        router["test_per_domain"] = self.router_accuracy_per_domain(test.chosen)
        gold = "gold_chosen" in dataset.column_names
        human_correct, gold_correct, per_domain = [], [], {}
        for d, name in enumerate(self.domains):
            rows = (test.chosen.domain == d).nonzero(as_tuple=True)[0]
            if not len(rows):
                continue
            r_c, r_r = (self.true_domain_scores(d, subset_sequences(s, rows)) for s in (test.chosen, test.rejected))
            block = {"human": float((r_c > r_r).double().mean()), "n": len(rows)}
            human_correct.append(r_c > r_r)
            if gold:
                g_c = torch.tensor(dataset.select(rows.tolist())["gold_chosen"])
                g_r = torch.tensor(dataset.select(rows.tolist())["gold_rejected"])
                decided = g_c != g_r  # gold ties have no right answer (as in harness.evaluate)
                says = torch.where(g_c > g_r, r_c > r_r, r_r > r_c)[decided]
                block["gold"] = float(says.double().mean())
                gold_correct.append(says)
            per_domain[name] = block
        oracle = {"human": float(torch.cat(human_correct).double().mean()), "per_domain": per_domain}
        if gold:
            oracle["gold"] = float(torch.cat(gold_correct).double().mean())
        return {"router": router, "oracle_routing": oracle}

    @torch.inference_mode()
    def true_domain_scores(self, d: int, seqs: EncodedSequences, batch_size: int = 256) -> torch.Tensor:
        """Rewards (N,) of domain d's reward model, whatever the router would say."""
        self.eval()
        out = torch.empty(len(seqs))
        for idx in seqs.length_sorted_batches(batch_size):
            b = seqs.batch(idx)
            out[idx] = self.expert_reward(d, b.input_ids, b.attention_mask).float()
        return out

    def param_counts(self) -> dict[str, int]:
        """total: router + every domain RM; active: router + the one RM a response is routed to."""
        counts = super().param_counts()
        router = sum(p.numel() for p in self.router.parameters())
        one_expert = max(sum(p.numel() for p in e.parameters()) for e in self.experts)  # all the same size
        counts["active"] = router + one_expert
        return counts


def subset_sequences(seqs: EncodedSequences, idx: torch.Tensor) -> EncodedSequences:
    return EncodedSequences(seqs.ids[idx], seqs.lengths[idx], seqs.prompt_ids[idx], seqs.prompt_lengths[idx],
                            seqs.domain[idx])
