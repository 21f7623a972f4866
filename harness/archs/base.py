"""The reward-model interface every architecture implements: ``RewardModel``, what ``fit`` receives
(``FitContext``, ``TrainConfig``) and what a forward returns (``RewardOutput``), with the small helpers the
interface's methods share (routing rows by domain, LoRA ranks, capability points). The training loops that ``fit``
calls are harness/archs/train.py's.

The seam (STYLE.md): ``forward(batch)`` returns a ``RewardOutput`` whose ``reward`` (B,) is all trainers and
evaluators act on, an optional already-weighted ``aux_loss`` the loop adds without asking why, and an ``info``
dict for ``explain()`` and plots. Multi-phase recipes live in the architecture's own ``fit``, calling
``harness.archs.train.train_bradley_terry`` as often as they need.

Beside its reward an architecture may expose, for evaluation only: ``views()``, its alternative scorers by name
(ensemble members, a model before a merge, oracle routing, single experts), ``routing()``, its domain router, and
``fit_report()``, what fit found out about itself. The job evaluates all of them with the one rule of
``harness.accuracy`` (run by ``harness.evaluate``); an architecture never computes metrics of test data itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.schema import Batch, EncodedPairs, EncodedSequences
from ..device import CPU, Compute
from ..optim import UpdateRule
from ..progress import progress

log = logging.getLogger(__name__)


@dataclass
class RewardOutput:
    reward: torch.Tensor  # (B,)
    aux_loss: torch.Tensor | None = None  # already weighted by its config coefficient
    info: dict = field(default_factory=dict)  # per-expert rewards, routing... never control flow


@dataclass
class View:
    """An alternative scorer of an architecture, evaluated by the job exactly like the RM itself (metrics.json
    ``views.<name>``; results/README.md)."""

    score: Callable[[Batch], torch.Tensor]  # rewards (B,) of a batch, like RewardOutput.reward
    # It reads the true domain of each row (batch.domain, e.g. oracle routing): evaluated on labelled pairs only.
    needs_domain: bool = False
    # (domain, point): one capability point's expert of one domain, evaluated on that domain's pairs against the
    # point's true order where the data holds it (metrics.json ``explain.capability_scores``).
    capability: tuple[str, str] | None = None
    # A model of its own (e.g. UMM's MoE before the merge): its param_counts, reported and plotted beside it.
    params: dict | None = None
    # That model's ``active_params`` (parameters used per scored sequence), when it depends on the sequence.
    active_params: Callable[[EncodedSequences, int], torch.Tensor] | None = None


@dataclass
class TrainConfig:
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    warmup: float
    max_grad_norm: float
    evals_per_epoch: int
    patience: int
    bucket_chunks: int
    # Weight of an L2 penalty on the rewards themselves (see harness.archs.train.train_bradley_terry); 0: none.
    score_l2: float = 0.0

    def validate(self, where: str = "train") -> None:
        UpdateRule(self.lr, self.weight_decay, self.warmup, self.max_grad_norm).validate(where)
        # Types first: a string or 2.5 from the command line would otherwise fail deep inside torch, unnamed.
        for key in ("batch_size", "epochs", "evals_per_epoch", "patience", "bucket_chunks"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{where}.{key}={v!r} must be an integer")
        for key in ("batch_size", "epochs", "evals_per_epoch", "patience", "bucket_chunks"):
            if getattr(self, key) < 1:
                raise ValueError(f"{where}.{key}={getattr(self, key)} must be >= 1")
        if isinstance(self.score_l2, bool) or not isinstance(self.score_l2, (int, float)) or not self.score_l2 >= 0:
            raise ValueError(f"{where}.score_l2={self.score_l2!r} must be a number >= 0")


@dataclass
class FitContext:
    """What an architecture's ``fit`` may use besides its data: the backbone, the loop's settings, the cache."""

    backbone: object  # harness.backbones.Backbone (prepared)
    train: TrainConfig
    cache: object  # harness.cache.ArtifactCache
    seed: int
    domains: list[str]
    data_spec: dict  # identifies the training data, for cache keys of trained parts
    # The prepared data source: ``splits["train"]`` holds the raw training rows behind ``train`` (text, extra
    # columns such as capability points), ``world`` the synthetic world or None. Fit reads the train split only.
    data: object | None = None
    artifact_dir: object | None = None  # the job's directory, for artifacts an arch writes (a merged model)
    metric_logger: object | None = None  # harness.loggers.MetricLogger: live curves of the rows below
    logs: list = field(default_factory=list)

    def log(self, row: dict) -> None:
        self.logs.append(row)
        if self.metric_logger is not None:
            self.metric_logger.train_row(row)
        # A phase's summary (it has best_val_acc) is news; each evaluation within it is detail (hydra.verbose).
        level = logging.INFO if "best_val_acc" in row else logging.DEBUG
        log.log(level, "reward model: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in row.items()))


class RewardModel(nn.Module):
    """Interface. Subclasses implement ``forward`` and ``fit``; override ``param_counts``/``explain`` where the
    default (every parameter active, ``info`` of the forward) is not what the architecture does."""

    # Where the RM runs and in what precision (harness/device.py). The job sets it before ``fit``; the training loops
    # (harness/archs/train.py), ``score`` and ``explain`` move the modules and every batch there and autocast by it.
    compute: Compute = CPU
    # Why the architecture's forwards stay padded where packing would run (harness/packing.py ``note_padded``: one
    # log line; length-bucketed batches then save the padding); None: its forwards pack (sequence_logits).
    padded_because: str | None = None

    def __init__(self):
        super().__init__()
        self._trained: dict[int, int] = {}  # id(param) -> numel, for "trainable = updated in any phase"

    def forward(self, batch: Batch) -> RewardOutput:
        raise NotImplementedError

    def fit(self, train: EncodedPairs, val: EncodedPairs, ctx: FitContext) -> None:
        raise NotImplementedError

    def cost(self) -> dict:
        """What fit consumed that the job cannot count itself (it counts backbone passes and tokens): the capability
        questions asked to a labeler, ``{"judge_queries": n}`` (each ordering of a question counts), and
        ``{"human_labels": n}`` when not every labelled training and validation pair was used."""
        return {}

    def views(self) -> dict[str, View]:
        """Alternative scorers by name, for evaluation (see ``View``); none by default."""
        return {}

    def routing(self) -> Callable[[Batch], torch.Tensor] | None:
        """A domain-routed architecture's router: batch -> the domain index (B,) each sequence is routed to, from
        its prompt. None (the default): the architecture does not route by domain."""
        return None

    def fit_report(self) -> dict:
        """What ``fit`` found out about itself that evaluation cannot see (labeler statistics, learned merge weights,
        members taken from the cache, ...): metrics.json ``fit``, as is. Never metrics of test data."""
        return {}

    def study_scorer(self, study: str) -> Callable[[Batch], torch.Tensor] | None:
        """The reward an optimisation study (``"bon"``, ``"ppo"``) optimises, where an architecture's setting is
        chosen per study (an ensemble's UWO weight); None (the default): the RM's own reward."""
        return None

    # -- export (harness.export) -----------------------------------------------------------------
    def export_structure(self) -> dict:
        """JSON-able facts the fitted module tree depends on beyond the arch config, the backbone and the
        domains (e.g. DMoERM's capability points); ``restore`` receives them back."""
        return {}

    def restore(self, ctx: FitContext, structure: dict) -> None:
        """Rebuild the fitted module tree (untrained) so that its ``state_dict`` can be loaded; by default what
        ``fit`` builds before it trains."""
        self.build(ctx, ctx.seed)

    def dense_models(self) -> dict[str, nn.Module]:
        """Plain transformers ``*ForSequenceClassification`` models whose logit IS this RM's reward (or one
        member's), exported as ordinary transformers folders; none by default."""
        return {}

    # -- shared machinery -------------------------------------------------------------------------
    def mark_trained(self, params: Iterable[nn.Parameter]) -> None:
        for p in params:
            self._trained[id(p)] = p.numel()

    @torch.inference_mode()
    def score(self, seqs: EncodedSequences, batch_size: int = 256,
              scorer: Callable[[Batch], torch.Tensor] | None = None) -> torch.Tensor:
        """Rewards (N,) for encoded sequences, batched in length order under inference_mode, on the RM's device,
        returned on the CPU; ``scorer`` (a view, the router) instead of the RM's own reward."""
        self.eval()
        compute = self.compute
        self.to(compute.device)
        scorer = scorer or (lambda batch: self(batch).reward)
        out = torch.empty(len(seqs))
        with progress(total=len(seqs), desc="reward model: scoring", unit="seq") as bar:
            for idx in seqs.length_sorted_batches(batch_size):
                with compute.autocast():
                    reward = scorer(seqs.batch(idx).to(compute.device))
                out[idx] = reward.float().cpu()
                bar.update(len(idx))
        return out

    @torch.inference_mode()
    def explain(self, seqs: EncodedSequences, batch_size: int = 256) -> dict:
        """The ``info`` of the forward (per-expert rewards, routing) for each sequence, concatenated."""
        self.eval()
        compute = self.compute
        self.to(compute.device)
        parts: dict[str, list] = {}
        order = []
        for idx in seqs.length_sorted_batches(batch_size):
            with compute.autocast():
                info = self(seqs.batch(idx).to(compute.device)).info
            order.append(idx)
            for k, v in info.items():
                if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == len(idx):
                    parts.setdefault(k, []).append(v.cpu())
        inverse = torch.argsort(torch.cat(order)) if order else None
        return {k: torch.cat(v)[inverse] for k, v in parts.items()}

    def unique_parameters(self) -> list[nn.Parameter]:
        seen, params = set(), []
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        return params

    def param_counts(self) -> dict[str, int]:
        """total: every stored parameter once; trainable: updated in any phase; active: used to score one
        (prompt, response) (SPEC §6) -- every parameter unless the architecture routes (it then overrides this);
        active_per_token: used for one token, the same unless experts are chosen per token. Where a response's count
        depends on the response (token-routed MoE: the union of the experts its tokens used), ``active`` is the most
        a response can use and ``active_params`` gives each response's; the job reports their mean over the test
        responses as metrics.json ``params.active``."""
        total = sum(p.numel() for p in self.unique_parameters())
        present = {id(p) for p in self.unique_parameters()}
        trainable = sum(n for pid, n in self._trained.items() if pid in present)
        return {"total": total, "trainable": trainable, "active": total, "active_per_token": total}

    def active_params(self, seqs: EncodedSequences, batch_size: int = 256) -> torch.Tensor:
        """(N,) parameters used to score each sequence: ``param_counts()["active"]`` for every one unless the
        architecture's use depends on the sequence (it then overrides this)."""
        return torch.full((len(seqs),), float(self.param_counts()["active"]), dtype=torch.float64)


def lora_rank(r: int | None, r_fraction: float, hidden_size: int) -> int:
    """A LoRA rank: ``r`` when given (an absolute override), else ``r_fraction`` of the backbone's hidden size,
    rounded, at least 1 -- so an adapter is the same share of its model on any backbone."""
    return int(r) if r is not None else max(1, round(r_fraction * hidden_size))


def lora_report(rank: int | None, r: int | None, hidden_size: int | None) -> dict:
    """What a parameter table says about a LoRA rank (metrics.json ``fit.lora``): the rank, the hidden size, the
    share it is of it, and whether it was set absolutely (``arch.r``) or as that share (``arch.r_fraction``)."""
    if rank is None or not hidden_size:
        return {}
    return {"r": rank, "hidden_size": hidden_size, "r_fraction_of_hidden": rank / hidden_size,
            "set_by": "arch.r" if r is not None else "arch.r_fraction"}


def require_domains(arch: str, pairs: EncodedPairs, split: str, n_domains: int) -> None:
    """Routing by domain needs a domain label on every pair: say so plainly instead of training on -1."""
    missing = int((pairs.chosen.domain < 0).sum())
    if missing:
        raise ValueError(
            f"arch={arch} needs a domain label on every preference pair (data column `domain`): {missing} of "
            f"{len(pairs)} {split} pairs have none. Use data that carries `domain` (data=synthetic, or a jsonl/hf "
            f"source with a `domain` column), or an architecture without a domain router."
        )
    if int(pairs.chosen.domain.max()) >= n_domains:
        raise ValueError(f"arch={arch}: {split} has domain index {int(pairs.chosen.domain.max())} but only "
                         f"{n_domains} domains are known")


def capability_points(arch: str, capabilities: dict | None, domains: list[str], dataset) -> list[list[str]]:
    """Each domain's capability points (DMoERM's experts; the judge questions of the information-matched
    single_judge): the YAML ``capabilities`` if given, else the data's ``cap_names`` column, which must name the
    same points on every pair of a domain."""
    if capabilities is not None:
        missing = [d for d in domains if not capabilities.get(d)]
        if missing:
            raise ValueError(f"arch.capabilities lists no points for domains {missing}")
        return [list(capabilities[d]) for d in domains]
    if dataset is None or "cap_names" not in dataset.column_names:
        raise ValueError(f"arch={arch} needs capability points per domain: data with a `cap_names` column "
                         "(data=synthetic) or arch.capabilities={domain: [point, ...]}")
    found: dict[str, list[str]] = {}
    for domain, names in zip(dataset["domain"], dataset["cap_names"], strict=True):
        if found.setdefault(domain, list(names)) != list(names):
            raise ValueError(f"arch={arch}: domain {domain!r} has pairs with different capability points "
                             f"({found[domain]} vs {list(names)}); give arch.capabilities explicitly")
    missing = [d for d in domains if not found.get(d)]
    if missing:
        raise ValueError(f"arch={arch}: no capability points for domains {missing} in the training data")
    return [found[d] for d in domains]


def route_rows(batch: Batch, domain: torch.Tensor,
               reward: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(B,) rewards of a batch whose row i goes to the model of domain[i]: ``reward(d, input_ids, attention_mask)``
    runs once per domain present, on that domain's rows with their padding trimmed; a model no row goes to is not
    touched. Differentiable (out-of-place), so training can run through it."""
    out = torch.zeros(len(batch), dtype=torch.float32, device=batch.input_ids.device)
    for d in domain.unique().tolist():
        rows = (domain == d).nonzero(as_tuple=True)[0]
        T = int(batch.attention_mask[rows].sum(1).max())  # rows of one domain may be shorter than the batch
        out = out.index_put((rows,), reward(d, batch.input_ids[rows, :T], batch.attention_mask[rows, :T]).float())
    return out
