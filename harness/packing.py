"""Padding-free reward forwards: the B sequences of a batch packed end to end into one row.

A right-padded batch (B, T) spends compute and memory on padding (the GPU perf anchor: 59% of the tokens of
random batches, 21% of length-bucketed ones). Packed, the real tokens of all sequences sit in one row (1, N)
with ``position_ids`` restarting at 0 at each sequence's start. When no attention mask and no KV cache are
passed, transformers derives the block-diagonal causal mask from those restarts
(``masking_utils.find_packed_sequence_indices``), so no sequence sees another. With
``attn_implementation="flex_attention"`` (or flash-attention's varlen kernels, when installed) that mask costs
nothing; with sdpa it is materialised as a dense (N, N) mask — correct (the CPU test uses it) but quadratic in
the row, the perf anchor's "wrong way" (5x slower than bucketing), so on a GPU packing only runs with flex or
flash.

A sequence's reward is the head's value at its last token, as ``*ForSequenceClassification`` pools it.

Where packing cannot run (the CPU by default, a backbone that is not a decoder with a ``score`` head on a
transformers trunk that builds its mask with ``create_causal_mask``) forwards stay padded, and the training
loop's length-bucketed batches are what saves padding (``EncodedPairs.bucketed_batches``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from .device import CPU, Compute

log = logging.getLogger(__name__)

# The packed row is padded to a multiple of this many tokens: flex_attention's block size, and it bounds the
# number of distinct row lengths that flex's compiled kernels see. The padding is a sequence of its own
# (positions restart at 0), so no real token attends to it, and its outputs are never read.
PACK_MULTIPLE = 128
# Token id of that padding segment: any id in the vocabulary would do; 0 is in every one.
PAD_SEGMENT_ID = 0


@dataclass
class PackedRow:
    input_ids: torch.Tensor  # (1, N) the real tokens of every sequence, end to end, then the padding segment
    position_ids: torch.Tensor  # (1, N) 0..L_i-1 for sequence i, then 0..pad-1
    last: torch.Tensor  # (B,) the index in the row of each sequence's last token


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, multiple: int = PACK_MULTIPLE) -> PackedRow:
    """One row from a right-padded (B, T) batch; every sequence must have at least one token."""
    lengths = attention_mask.sum(1)  # (B,)
    assert bool((lengths > 0).all()), "an empty sequence cannot be packed"
    ids = input_ids[attention_mask.bool()]  # (N,) row-major: sequence 0's tokens, then sequence 1's, ...
    ends = lengths.cumsum(0)  # (B,) one past each sequence's last token
    starts = ends - lengths
    positions = torch.arange(ids.shape[0], device=ids.device) - starts.repeat_interleave(lengths)
    pad = -ids.shape[0] % multiple
    if pad:
        ids = torch.cat([ids, ids.new_full((pad,), PAD_SEGMENT_ID)])
        positions = torch.cat([positions, torch.arange(pad, device=ids.device)])
    return PackedRow(ids[None], positions[None], ends - 1)


def can_pack(model: nn.Module) -> bool:
    """A transformers decoder ``*ForSequenceClassification`` (a ``score`` head on ``base_model``) whose trunk
    builds its attention mask with ``create_causal_mask``, which reads packed sequences from position_ids."""
    trunk = getattr(model, "base_model", None)
    if not isinstance(model, PreTrainedModel) or getattr(model, "score", None) is None or trunk is None:
        return False
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    modeling = sys.modules.get(type(trunk).__module__)
    return modeling is not None and hasattr(modeling, "create_causal_mask")


def packed_attention(device: torch.device) -> str | None:
    """The attention kernel that makes a packed row cheap on ``device``, None where there is none (sdpa would
    materialise the (N, N) mask): flash-attention 2 when installed, else flex_attention (torch >= 2.5)."""
    if device.type != "cuda":
        return None
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return None
    return "flex_attention"


# model -> {(packing, device type): whether its forwards are packed}; decided when the model first runs there.
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_packing(model: nn.Module, compute: Compute) -> bool:
    """Whether ``model``'s forwards are packed under ``compute.packing`` (auto: on a GPU, with flex or flash
    attention, for a backbone that can; on: wherever the backbone can, with sdpa on the CPU; off). On first use
    a packed model is switched to the fast kernel."""
    if compute.packing == "off":
        return False
    decisions = _PACKED.setdefault(model, {})
    key = (compute.packing, compute.device.type)
    if key in decisions:
        return decisions[key]
    kernel = packed_attention(compute.device)
    packed = can_pack(model) and (kernel is not None or compute.packing == "on")
    if packed and kernel is not None and model.config._attn_implementation != kernel:
        model.set_attn_implementation(kernel)
    if compute.packing == "on" and not packed:
        log.info("packing=on: %s cannot be packed (not a decoder with a score head); padded batches instead",
                 type(model).__name__)
    decisions[key] = packed
    return packed


def packing_wanted(compute: Compute) -> bool:
    """Whether ``compute.packing`` asks for packed forwards on this device (on; auto with a fast kernel there)."""
    return compute.packing == "on" or (compute.packing == "auto" and packed_attention(compute.device) is not None)


def note_padded(arch: nn.Module, compute: Compute) -> bool:
    """One log line when packing is wanted but ``arch`` (a RewardModel whose ``padded_because`` says why) stays
    padded; its training then saves padding by length-bucketed batches alone. Returns whether it logged."""
    why = getattr(arch, "padded_because", None)
    if why is None or not packing_wanted(compute):
        return False
    log.info("packing=%s: %s stays padded, with length-bucketed batches (%s)", compute.packing, type(arch).__name__,
             why)
    return True


def sequence_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    compute: Compute = CPU) -> torch.Tensor:
    """(B, num_labels) the head's logits at each sequence's last real token, packed or padded as
    ``use_packing`` decides; padded is exactly ``model(...).logits``."""
    if not use_packing(model, compute):
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return packed_logits(model, input_ids, attention_mask)


def packed_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, num_labels) as ``sequence_logits``, through one packed row: no attention mask and no cache, so the
    trunk derives the per-sequence causal mask from the restarting position_ids."""
    row = pack(input_ids, attention_mask)
    hidden = model.base_model(input_ids=row.input_ids, position_ids=row.position_ids, attention_mask=None,
                              use_cache=False).last_hidden_state  # (1, N, H)
    return model.score(hidden[0, row.last])  # (B, num_labels)
