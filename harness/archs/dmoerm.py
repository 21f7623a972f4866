"""dmoerm (Quan, "DMoERM: Double-Layer Mixture of Experts Reward Model", arXiv 2403.01197; methods.md §2).

Outer layer, a sparse MoE: a router — the backbone with a classification head over domains — reads the PROMPT
only and sends each (prompt, response) to one domain's inner model (hard top-1; real prompts do not announce
their task category, predicting it is the router's job).

Inner layer, a dense MoE per domain, trained in three phases:
  1. a domain base RM: full fine-tune of the backbone + scalar head (Bradley-Terry) on ``phase1_fraction`` (60%)
     of that domain's human-labelled training pairs;
  2. one LoRA expert per capability point of the domain (peft on q/v by default; rank the paper's share of the
     hidden size, r=32 of Qwen-1.8B's 2048 = 1/64, and update scale alpha/r = 1 as its alpha=32), each with
     its own copy of the phase-1 head, trained with Bradley-Terry on capability preference pairs built from the
     labeler's labels (+1: chosen better on that point, -1: rejected better -> swapped, 0: dropped);
  3. an MLP over the CONCATENATED last-token hidden states of the K experts,
     Linear(H·K -> H) -> PReLU -> Linear(H -> 1), trained on the remaining 40% with backbone and experts frozen.
     The last Linear has no bias (the reference code's has one): the Bradley-Terry loss cannot see a shift of
     every reward, so such a bias gets no gradient beyond rounding noise, which Adam would amplify into steps.
A scored response costs one router pass (prompt only) + K passes of its domain's backbone, one per expert;
scoring groups a batch by routed domain, so each expert runs once per batch, not once per example.

The reference code's bugs (methods.md §2.6) are not reproduced: every model starts from the backbone's
pretrained weights; the router's cross-entropy gets logits (no double softmax); chosen is better everywhere,
in training and evaluation alike; the held-out split uses the stated fraction; each expert's head is a
registered, trained, saved module (peft's per-adapter ``modules_to_save`` copy, initialised from the phase-1
head), and experts are added with ``add_adapter``, never by wrapping the model again.

Per domain everything lives in ONE peft model: the phase-1 weights are its base model (trained while adapters
are disabled), and the K experts are adapters ``cap_0..cap_{K-1}`` switched with ``set_adapter``.

The capability labeler comes with the architecture's own config (``arch.labeler``, Hydra group ``arch/labeler``);
the raw training rows it is asked about and the synthetic world's judges come from ``FitContext.data``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from ..data.schema import Batch, EncodedPairs, EncodedSequences
from ..seeds import Stream, derive_seed
from .base import (
    FitContext,
    RewardModel,
    RewardOutput,
    TrainConfig,
    View,
    capability_points,
    lora_rank,
    lora_report,
    require_domains,
    route_rows,
)
from .train import train_bradley_terry, train_classifier


def expert_name(k: int) -> str:
    # Indexed, not the point's name: adapter names become module keys, and a point's name may hold characters
    # ("." or spaces, or Chinese) a module key should not.
    return f"cap_{k}"


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, T, H) -> (b, H): the state at each row's last real token (right padding)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), attention_mask.sum(1) - 1]


def cat_sequences(a: EncodedSequences, b: EncodedSequences) -> EncodedSequences:
    return EncodedSequences(torch.cat([a.ids, b.ids]), torch.cat([a.lengths, b.lengths]),
                            torch.cat([a.prompt_ids, b.prompt_ids]), torch.cat([a.prompt_lengths, b.prompt_lengths]),
                            torch.cat([a.domain, b.domain]))


def oriented_pairs(pairs: EncodedPairs, rows: torch.Tensor, labels: torch.Tensor) -> EncodedPairs:
    """Capability preference pairs: row i as is where labels[i] = +1, chosen and rejected swapped where -1."""
    keep, flip = rows[labels > 0], rows[labels < 0]
    return EncodedPairs(cat_sequences(pairs.chosen.subset(keep), pairs.rejected.subset(flip)),
                        cat_sequences(pairs.rejected.subset(keep), pairs.chosen.subset(flip)))


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class DMoERM(RewardModel):
    # Each capability expert is a peft model whose pooled hidden state (last_token of its trunk's padded output)
    # feeds a per-domain head, and a batch is routed per row to domains: not a *ForSequenceClassification forward
    # that packing.sequence_logits can pack.
    padded_because = "its peft experts pool hidden states of padded batches routed per row"

    def __init__(
        self,
        router: dict,
        phase1: dict,
        phase2: dict,
        phase3: dict,
        phase1_fraction: float,
        r: int | None,
        r_fraction: float,
        lora_scaling: float,
        lora_dropout: float,
        target_modules: list[str] | None,
        expert_val_fraction: float,
        min_expert_pairs: int,
        label_pairs_per_domain: int | None,
        capabilities: dict[str, list[str]] | None,
        labeler,
    ):
        super().__init__()
        if not 0 < phase1_fraction < 1:
            raise ValueError(f"arch.phase1_fraction={phase1_fraction} must be in (0, 1)")
        if not 0 <= expert_val_fraction < 1:
            raise ValueError(f"arch.expert_val_fraction={expert_val_fraction} must be in [0, 1)")
        if (r is not None and r < 1) or min_expert_pairs < 1:
            raise ValueError(f"arch.r={r} and arch.min_expert_pairs={min_expert_pairs} must be >= 1 (r: or null)")
        if not 0 < r_fraction <= 1 or not lora_scaling > 0:
            raise ValueError(f"arch.r_fraction={r_fraction} must be in (0, 1] and arch.lora_scaling={lora_scaling} > 0")
        if label_pairs_per_domain is not None and label_pairs_per_domain < 1:
            raise ValueError(f"arch.label_pairs_per_domain={label_pairs_per_domain} must be >= 1 or null")
        self.phase_overrides = {"router": dict(router), "phase1": dict(phase1), "phase2": dict(phase2),
                                "phase3": dict(phase3)}
        for where, overrides in self.phase_overrides.items():
            unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
            if unknown:
                raise ValueError(f"arch.{where}: unknown keys {sorted(unknown)} (valid: the keys of `train`)")
        self.phase1_fraction = phase1_fraction
        self.lora = dict(r=r, r_fraction=r_fraction, lora_scaling=lora_scaling, lora_dropout=lora_dropout,
                         target_modules=target_modules)
        self.rank: int | None = None  # the LoRA rank used, set in build() from the backbone's hidden size
        self.hidden_size: int | None = None
        self.expert_val_fraction = expert_val_fraction
        self.min_expert_pairs = min_expert_pairs
        self.label_pairs_per_domain = label_pairs_per_domain
        self.capabilities = {k: list(v) for k, v in capabilities.items()} if capabilities else None
        self.labeler = labeler  # harness.labelers.*: label(request, seed, world) -> {"labels", "stats"}
        self.router = None  # *ForSequenceClassification over domains, built in build()
        self.inner = nn.ModuleDict()  # domain index -> peft model: phase-1 base + one LoRA expert per point
        self.mixers = nn.ModuleDict()  # domain index -> the phase-3 MLP
        self.domains: list[str] = []
        self.points: list[list[str]] = []  # per domain, its capability points (expert k <-> points[d][k])
        self.report: dict = {}  # what fit learned about itself, for fit_report

    # -- structure ----------------------------------------------------------------------------------
    def build(self, ctx: FitContext, seed: int) -> DMoERM:
        self.domains = list(ctx.domains)
        if len(self.domains) < 2:
            raise ValueError(f"arch=dmoerm needs at least 2 domains to route between, got {self.domains}")
        self.points = capability_points("dmoerm", self.capabilities, self.domains,
                                         ctx.data.splits["train"] if ctx.data else None)
        self.router = ctx.backbone.reward_model(derive_seed(seed, Stream.ROUTER_INIT), num_labels=len(self.domains))
        H = self.hidden_size = ctx.backbone.hidden_size
        self.rank = lora_rank(self.lora["r"], self.lora["r_fraction"], H)
        lora = LoraConfig(task_type="SEQ_CLS", r=self.rank, lora_alpha=self.lora["lora_scaling"] * self.rank,
                          lora_dropout=self.lora["lora_dropout"], bias="none",
                          target_modules=list(self.lora["target_modules"] or ctx.backbone.lora_targets))
        for d, points in enumerate(self.points):
            # Domain d's base RM is model d of the job (harness.seeds), its MLP combiner d.
            # Phase 1 trains the whole domain base RM (as the paper does); the LoRA experts come on top of it.
            base = ctx.backbone.reward_model(derive_seed(seed, Stream.RM_INIT, d), adapt=False)
            model = get_peft_model(base, lora, adapter_name=expert_name(0))
            for k in range(1, len(points)):
                model.add_adapter(expert_name(k), lora)
            self.inner[str(d)] = model
            torch.manual_seed(derive_seed(seed, Stream.COMBINER_INIT, d))
            K = len(points)
            self.mixers[str(d)] = nn.Sequential(nn.Linear(H * K, H), nn.PReLU(), nn.Linear(H, 1, bias=False))
        return self

    def export_structure(self) -> dict:
        return {"points": self.points}  # the experts per domain: from the data's cap_names, not the config

    def restore(self, ctx: FitContext, structure: dict) -> None:
        self.capabilities = dict(zip(ctx.domains, structure["points"], strict=True))
        self.build(ctx, ctx.seed)

    def head(self, d: int) -> nn.Module:
        """Domain d's scalar head; peft runs the active expert's copy (or the phase-1 original, adapters off)."""
        hf = self.inner[str(d)].base_model.model  # the transformers *ForSequenceClassification
        return hf.score if hasattr(hf, "score") else hf.classifier

    def hidden(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, H) last-token final hidden state of domain d's backbone with its current adapter state."""
        hf = self.inner[str(d)].base_model.model
        out = hf.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return last_token(out.last_hidden_state, attention_mask)

    def base_parameters(self, d: int) -> list[nn.Parameter]:
        """Phase 1's parameters: domain d's backbone and original head (no LoRA weights, no expert head copies)."""
        return [p for n, p in self.inner[str(d)].named_parameters() if "lora_" not in n and "modules_to_save" not in n]

    def base_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Phase 1's reward: the domain base RM alone (every expert disabled), (b,)."""
        with self.inner[str(d)].disable_adapter():
            return self.head(d)(self.hidden(d, input_ids, attention_mask)).squeeze(-1)

    def expert(self, d: int, k: int, input_ids, attention_mask, trainable: bool = False):
        """Expert k of domain d alone: its last-token hidden state (b, H) and its own head's reward (b,)."""
        self.inner[str(d)].set_adapter(expert_name(k), inference_mode=not trainable)
        h = self.hidden(d, input_ids, attention_mask)
        return h, self.head(d)(h).squeeze(-1)

    def expert_features(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        memo: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The K frozen experts of domain d on rows of that domain: their last-token hidden states concatenated
        (b, H*K) and their own rewards (b, K). One pass per expert over all the rows.

        ``memo`` (phase 3 only): features by token content. The experts are frozen and deterministic then, so a
        sequence seen in an earlier epoch or evaluation is looked up instead of re-run K times."""
        lengths = attention_mask.sum(1)
        todo = list(range(len(lengths)))
        if memo is not None:
            ids_cpu, lengths_cpu = input_ids.cpu(), lengths.cpu()
            keys = [ids_cpu[i, : lengths_cpu[i]].numpy().tobytes() for i in range(len(lengths))]
            todo = [i for i, key in enumerate(keys) if key not in memo]
        if todo:
            rows = torch.tensor(todo, device=input_ids.device)
            T = int(lengths[rows].max())  # rows of one domain may be shorter than the batch: trim padding
            ids, mask = input_ids[rows, :T], attention_mask[rows, :T]
            model = self.inner[str(d)]
            was_training = model.training
            model.eval()  # experts are frozen: no LoRA dropout either
            with torch.no_grad():
                states, rewards = zip(*(self.expert(d, k, ids, mask) for k in range(len(self.points[d]))),
                                      strict=True)
            model.train(was_training)
            features, rewards = torch.cat(states, dim=-1), torch.stack(rewards, dim=-1)  # (b', H*K), (b', K)
            if memo is None:
                return features, rewards
            for j, i in enumerate(todo):
                memo[keys[i]] = (features[j], rewards[j])
        features, rewards = zip(*(memo[key] for key in keys), strict=True)
        return torch.stack(features), torch.stack(rewards)

    def domain_reward(self, d: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      memo: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase 3's reward for rows of domain d: the MLP over the K experts' concatenated hidden states (b,),
        and the experts' own rewards (b, K)."""
        features, rewards = self.expert_features(d, input_ids, attention_mask, memo)
        return self.mixers[str(d)](features).squeeze(-1), rewards

    def router_logits(self, batch: Batch) -> torch.Tensor:
        """(B, n_domains) domain logits from the prompt alone, pooled at its last real token."""
        return self.router(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, use_cache=False).logits

    def forward(self, batch: Batch) -> RewardOutput:
        probs = self.router_logits(batch).float().softmax(-1)  # (B, n)
        domain_prob, domain = probs.max(-1)  # hard top-1 routing, (B,) each
        B, K_max = len(batch), max(len(p) for p in self.points)
        reward = torch.zeros(B, dtype=torch.float32, device=batch.input_ids.device)
        experts = torch.full((B, K_max), float("nan"), device=batch.input_ids.device)  # NaN: domain has fewer
        for d in domain.unique().tolist():  # each routed domain's experts run once per batch
            rows = (domain == d).nonzero(as_tuple=True)[0]
            r, r_experts = self.domain_reward(d, batch.input_ids[rows], batch.attention_mask[rows])
            reward = reward.index_put((rows,), r.float())
            experts[rows, : r_experts.shape[1]] = r_experts.float()
        return RewardOutput(reward=reward, info={"domain": domain, "domain_prob": domain_prob,
                                                 "expert_rewards": experts, "reward": reward.detach()})

    # -- training -----------------------------------------------------------------------------------
    def phase_config(self, ctx: FitContext, phase: str) -> TrainConfig:
        cfg = dataclasses.replace(ctx.train, **self.phase_overrides[phase])
        cfg.validate(f"arch.{phase}")
        return cfg

    def request_labels(self, train: EncodedPairs, ctx: FitContext, gen: torch.Generator) -> dict[int, tuple]:
        """Ask the labeler about every point of (up to label_pairs_per_domain) training pairs of each domain, in
        one request so a remote labeler can run it concurrently. Returns {d: (train rows, labels (n, K))}."""
        if self.labeler is None:
            raise ValueError("arch=dmoerm needs a capability labeler (arch.labeler; arch/labeler=oracle|openai|local)")
        if ctx.data is None:
            raise ValueError("arch=dmoerm needs the raw training split (FitContext.data) to ask the labeler")
        rows_by_domain = {}
        for d in range(len(self.domains)):
            rows = (train.chosen.domain == d).nonzero(as_tuple=True)[0]
            if self.label_pairs_per_domain is not None and len(rows) > self.label_pairs_per_domain:
                rows = rows[torch.randperm(len(rows), generator=gen)[: self.label_pairs_per_domain]].sort().values
            rows_by_domain[d] = rows
        order = torch.cat(list(rows_by_domain.values())).tolist()
        data = ctx.data.splits["train"].select(order)
        if self.capabilities is None:
            request = data  # cap_names (and true values, for statistics) come with the data
        else:
            request = {c: data[c] for c in ("prompt", "chosen", "rejected", "domain")}
            index = {name: d for d, name in enumerate(self.domains)}
            request["cap_names"] = [self.points[index[dom]] for dom in data["domain"]]
        result = self.labeler.label(request, ctx.seed, world=getattr(ctx.data, "world", None))
        labels, out, start = result["labels"], {}, 0
        for d, rows in rows_by_domain.items():
            block = labels[start : start + len(rows)]
            start += len(rows)
            out[d] = (rows, torch.tensor(block, dtype=torch.long).reshape(len(rows), len(self.points[d])))
        self.report["labeler"] = {"name": getattr(self.labeler, "name", type(self.labeler).__name__),
                                  **result["stats"]}
        ctx.log({"phase": "dmoerm/labels", **{k: v for k, v in result["stats"].items()
                                              if isinstance(v, (int, float))}})
        return out

    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        n = len(ctx.domains)
        require_domains("dmoerm", train, "train", n)
        require_domains("dmoerm", val, "val", n)
        self.build(ctx, ctx.seed)
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, Stream.SUBSAMPLE))

        # Outer layer: the router, cross-entropy over domains on the training prompts.
        result = train_classifier(self, list(self.router.parameters()), self.router_logits, train.chosen,
                                  val.chosen, self.phase_config(ctx, "router"),
                                  derive_seed(ctx.seed, Stream.ROUTER_ORDER), ctx, phase="dmoerm/router")
        ctx.log(result)

        labelled = self.request_labels(train, ctx, gen)
        cfg1, cfg2, cfg3 = (self.phase_config(ctx, p) for p in ("phase1", "phase2", "phase3"))
        self.report["inner"], self.report["experts"] = {}, {}
        for d, name in enumerate(self.domains):
            rows = (train.chosen.domain == d).nonzero(as_tuple=True)[0]
            if len(rows) < 2:
                raise ValueError(f"arch=dmoerm: domain {name!r} has {len(rows)} training pairs; need >= 2")
            rows = rows[torch.randperm(len(rows), generator=gen)]
            n1 = min(len(rows) - 1, max(1, round(self.phase1_fraction * len(rows))))
            val_rows = (val.chosen.domain == d).nonzero(as_tuple=True)[0]
            val_d = val.subset(val_rows) if len(val_rows) else None
            model = self.inner[str(d)]
            report = self.report["inner"][name] = {"phase1_pairs": n1, "phase3_pairs": len(rows) - n1}
            experts = self.report["experts"][name] = {}

            # Phase 1: the domain base RM, full fine-tune with every expert disabled.
            base = self.base_parameters(d)
            for p in base:
                p.requires_grad_(True)
            result = train_bradley_terry(
                self, base, train.subset(rows[:n1]), val_d, cfg1, derive_seed(ctx.seed, Stream.RM_ORDER, d), ctx,
                phase=f"dmoerm/{name}/base",
                forward=lambda b, d=d: RewardOutput(reward=self.base_reward(d, b.input_ids, b.attention_mask)))
            ctx.log(result)
            report["base_val_acc"] = result["best_val_acc"]
            for p in base:
                p.requires_grad_(False)
            # Every expert's head starts as a copy of the trained phase-1 head (peft copied the untrained one).
            wrapper = self.head(d)
            for k in range(len(self.points[d])):
                wrapper.modules_to_save[expert_name(k)].load_state_dict(wrapper.original_module.state_dict())

            # Phase 2: one LoRA expert per capability point, on the labeler's kept labels for that point.
            label_rows, labels = labelled[d]
            for k, point in enumerate(self.points[d]):
                pairs = oriented_pairs(train, label_rows, labels[:, k])
                perm = torch.randperm(len(pairs), generator=gen)
                n_val = int(self.expert_val_fraction * len(pairs))
                entry = experts[point] = {"pairs": len(pairs) - n_val, "val_pairs": n_val}
                if len(pairs) - n_val < self.min_expert_pairs:
                    # Too few kept labels: the expert stays the phase-1 model (zero LoRA update), and says so.
                    entry["trained"] = False
                    ctx.log({"phase": f"dmoerm/{name}/{point}", "skipped": "too few kept labels",
                             "pairs": len(pairs) - n_val})
                    continue
                model.set_adapter(expert_name(k))  # adapter k (LoRA + head copy) trainable, the others frozen
                params = [p for p in model.parameters() if p.requires_grad]
                result = train_bradley_terry(
                    self, params, pairs.subset(perm[n_val:]), pairs.subset(perm[:n_val]) if n_val else None, cfg2,
                    derive_seed(ctx.seed, Stream.EXPERT_ORDER, d, k), ctx, phase=f"dmoerm/{name}/{point}",
                    forward=lambda b, d=d, k=k: RewardOutput(
                        reward=self.expert(d, k, b.input_ids, b.attention_mask, trainable=True)[1]))
                ctx.log(result)
                entry.update(trained=True, val_acc=result["best_val_acc"])
            for p in model.parameters():
                p.requires_grad_(False)

            # Phase 3: the MLP over the K experts' concatenated hidden states, on the other 40%.
            memo: dict = {}
            result = train_bradley_terry(
                self, list(self.mixers[str(d)].parameters()), train.subset(rows[n1:]), val_d, cfg3,
                derive_seed(ctx.seed, Stream.COMBINER_ORDER, d), ctx, phase=f"dmoerm/{name}/mlp",
                forward=lambda b, d=d, memo=memo: RewardOutput(
                    reward=self.domain_reward(d, b.input_ids, b.attention_mask, memo)[0]))
            ctx.log(result)
            report["mlp_val_acc"] = result["best_val_acc"]
        self.eval()

    # -- reporting ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def explain(self, seqs: EncodedSequences, batch_size: int = 256) -> dict:
        """Per sequence: routed domain (index into ``domains``) and its probability, each capability expert's
        own reward (``expert_rewards[:, k]`` is expert k of the routed domain: ``capabilities[domain][k]``; NaN
        beyond that domain's K) and the final reward."""
        out = super().explain(seqs, batch_size)
        out["domains"] = list(self.domains)
        out["capabilities"] = {name: list(p) for name, p in zip(self.domains, self.points, strict=True)}
        return out

    def views(self) -> dict[str, View]:
        """Scored by the TRUE domain's models (no routing errors): ``oracle_routing``, the inner model (phase 3);
        ``base_rm``, the phase-1 domain base RM alone. And ``capability/<domain>/<point>``, each expert alone on its
        own domain (the capability heat map)."""
        views = {
            "oracle_routing": View(lambda b: route_rows(b, b.domain, lambda *x: self.domain_reward(*x)[0]),
                                   needs_domain=True),
            "base_rm": View(lambda b: route_rows(b, b.domain, self.base_reward), needs_domain=True),
        }
        for d, (name, points) in enumerate(zip(self.domains, self.points, strict=True)):
            for k, point in enumerate(points):
                views[f"capability/{name}/{point}"] = View(
                    lambda b, d=d, k=k: self.expert(d, k, b.input_ids, b.attention_mask)[1], capability=(name, point))
        return views

    def routing(self) -> Callable[[Batch], torch.Tensor]:
        return lambda batch: self.router_logits(batch).float().softmax(-1).argmax(-1)  # forward's decision

    def fit_report(self) -> dict:
        """``labeler``: its statistics; ``inner``: per domain the phases' pair counts and validation accuracies;
        ``experts``: per domain and point the expert's kept label pairs, whether it trained, its validation
        accuracy; ``cost``: backbone passes a scored response costs (1 router + K experts of its domain);
        ``lora``: the experts' rank and its share of the hidden size."""
        return {
            "lora": lora_report(self.rank, self.lora["r"], self.hidden_size),
            "labeler": self.report.get("labeler", {}),
            "inner": self.report.get("inner", {}),
            "experts": self.report.get("experts", {}),
            "cost": {"backbone_passes_per_response": {name: 1 + len(p) for name, p in
                                                      zip(self.domains, self.points, strict=True)}},
        }

    def cost(self) -> dict:
        """Every capability label is one question asked twice (swap-and-agree): 2 judge queries per label."""
        return {"judge_queries": 2 * int(self.report.get("labeler", {}).get("asked", 0))}

    def param_counts(self) -> dict[str, int]:
        """total: router + per domain (backbone + K LoRA adapters + K expert heads + the phase-1 head + MLP);
        active: router + the largest domain's backbone, K adapters, K heads and MLP (the phase-1 head is stored
        but not run when scoring). A response costs 1 + K backbone passes: see fit_report()["cost"]."""
        counts = super().param_counts()
        per_domain = []
        for d in range(len(self.domains)):
            original = numel(self.head(d).original_module)
            per_domain.append(numel(self.inner[str(d)]) - original + numel(self.mixers[str(d)]))
        counts["active"] = numel(self.router) + max(per_domain)
        counts["active_per_token"] = counts["active"]  # every token of a response goes through the same model
        return counts
