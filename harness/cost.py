"""What a job's reward model cost, counted where it is spent: backbone passes and tokens.

``BackbonePasses`` counts every forward of a transformers *trunk* (the model whose ``base_model`` is itself:
``LlamaModel``, ``BertModel``...) while it is active, whatever architecture, adapter or router calls it — so no
architecture reports its own compute and none can forget to. A trunk forward with gradients enabled is a training
pass; one without (validation, frozen expert features, scoring) is an inference pass. Together with
``RewardModel.cost()`` (labels an architecture asked for) this is the job's ``cost`` block in metrics.json.
"""

from __future__ import annotations

import torch
from torch.nn.modules.module import register_module_forward_hook
from transformers import PreTrainedModel


def is_trunk(module: torch.nn.Module) -> bool:
    """A transformers backbone proper (not a task wrapper around one): each call is one backbone pass."""
    return isinstance(module, PreTrainedModel) and module.base_model is module


class BackbonePasses:
    """Context manager: counts trunk forwards while active. ``sequences`` / ``tokens`` (real tokens, by the
    attention mask) split into ``train`` (gradients on) and ``inference``."""

    def __init__(self):
        self.counts = {"train": {"sequences": 0, "tokens": 0}, "inference": {"sequences": 0, "tokens": 0}}
        self._handle = None

    def _hook(self, module, args, kwargs, output) -> None:
        if not is_trunk(module):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:  # called on embeddings: count the sequences they stand for
            ids = kwargs.get("inputs_embeds")[..., 0]
        mask = kwargs.get("attention_mask")
        kind = "train" if torch.is_grad_enabled() else "inference"
        self.counts[kind]["sequences"] += int(ids.shape[0])
        self.counts[kind]["tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())

    def __enter__(self) -> BackbonePasses:
        self._handle = register_module_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    @property
    def sequences(self) -> int:
        return self.counts["train"]["sequences"] + self.counts["inference"]["sequences"]


def cost_block(fit: BackbonePasses, scoring: BackbonePasses, responses_scored: int, labelled_pairs: int,
               arch_cost: dict) -> dict:
    """metrics.json ``cost``: human labels used, judge queries made, backbone tokens of training (this job's
    training passes plus those of parts reused from the cache, e.g. ensemble members trained by an earlier job),
    backbone tokens of fit's inference passes (validation, frozen features), backbone passes per scored response."""
    reused = int(arch_cost.get("reused_train_backbone_tokens", 0))
    return {
        "human_labels": int(arch_cost.get("human_labels", labelled_pairs)),
        "judge_queries": int(arch_cost.get("judge_queries", 0)),
        "train_backbone_tokens": fit.counts["train"]["tokens"] + reused,
        "reused_train_backbone_tokens": reused,
        "train_backbone_sequences": fit.counts["train"]["sequences"],
        "fit_inference_backbone_tokens": fit.counts["inference"]["tokens"],
        "backbone_passes_per_response": scoring.sequences / max(1, responses_scored),
    }
