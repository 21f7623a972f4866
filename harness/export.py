"""Export a trained reward model of any architecture, load it back with one call, and use it outside the harness.

A job writes ``<job_dir>/reward_model/`` (config key ``export``), a self-describing folder:

- ``rmharness.json``: what rebuilds the model -- the architecture's Hydra config (``_target_`` + knobs), the
  backbone's text template, truncation and fine-tuning mode, the data's domains, the job seed, whatever the
  architecture learned about its own shape (``export_structure``), parameter counts and package versions;
- ``model.safetensors``: the architecture's whole ``state_dict`` (tied tensors stored once), no pickle;
- ``backbone/``: the backbone's transformers ``config.json`` and tokenizer (no weights: they are in
  ``model.safetensors``, fine-tuned);
- ``dense/<name>/`` for the architectures whose reward IS one plain ``*ForSequenceClassification`` (single,
  UMM's merged model, each ensemble member): an ordinary transformers folder (weights + tokenizer; LoRA merged
  in) that ``AutoModelForSequenceClassification.from_pretrained`` loads with no harness code. Its
  ``config.json`` carries ``rmharness_prompt_template`` (how a prompt and a response become the text the model
  reads) and the tokenizer's ``model_max_length`` is the harness's truncation.

``load_reward_model(path)`` rebuilds the untrained module tree through the architecture's own ``restore``
(by default its ``build``), fills it from ``model.safetensors`` and returns a ``RewardScorer``:
``score(prompts, responses)`` gives the job's numbers (same tokenization, same length-sorted batches).
``trl_reward_func`` turns any scorer into a TRL ``reward_funcs`` callable; ``harness.serve`` puts one behind
HTTP.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.initialization import no_init_weights

from .backbones import Backbone, add_lora, merge_lora, quiet_loading
from .data.schema import encode_sequences
from .device import Compute, resolve_compute

log = logging.getLogger(__name__)

FORMAT = "rmharness-reward-model"
# Bump when the folder's layout or the meaning of a field changes; the loader refuses versions it does not know.
FORMAT_VERSION = 1
# Where a job exports its reward model, inside its job directory.
EXPORT_DIR = "reward_model"
META_FILE = "rmharness.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_DIR = "backbone"
DENSE_DIR = "dense"
# Scoring batch when the export does not say (the job's eval.batch_size is recorded in the export).
DEFAULT_BATCH_SIZE = 256


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("rmharness", "torch", "transformers", "peft", "safetensors"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def prompt_template_of(backbone: Backbone) -> str:
    """The backbone's join as a ``str.format`` template, checked against ``join`` itself: an export whose
    template did not reproduce the training text would score something the model never read."""
    template = getattr(backbone, "prompt_template", None) or backbone.join("{prompt}", "{response}")
    probe = ("a probe prompt", "a probe response")
    if template.format(prompt=probe[0], response=probe[1]) != backbone.join(*probe):
        raise ValueError(f"backbone {backbone.name}: its join() is not the template {template!r}; the export "
                         "cannot describe how it builds the text an RM reads")
    return template


# ------------------------------------------------------------------------------------------------------ scoring
class RewardScorer:
    """Text in, rewards out: a fitted harness RM with the tokenizer, text template and truncation it was trained
    with. ``score`` tokenizes exactly as the job does (``encode_sequences``) and scores in the same
    length-sorted batches, so the same texts give the same numbers."""

    def __init__(self, rm, tokenizer, prompt_template: str, max_length: int, batch_size: int = DEFAULT_BATCH_SIZE,
                 info: dict | None = None):
        self.rm, self.tokenizer = rm.eval(), tokenizer
        self.prompt_template, self.max_length, self.batch_size = prompt_template, int(max_length), int(batch_size)
        self.info = info or {}  # rmharness.json of a loaded export

    def join(self, prompt: str, response: str) -> str:
        return self.prompt_template.format(prompt=prompt, response=response)

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        """Rewards (N,) float32 for N (prompt, response) pairs."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        for what, texts in (("prompt", prompts), ("response", responses)):
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise TypeError(f"score: {what} {bad} is a {type(texts[bad]).__name__}, not a string")
        if not prompts:
            return torch.empty(0)
        seqs = encode_sequences(self.tokenizer, self.join, prompts, responses, [""] * len(prompts), {},
                                self.max_length)
        return self.rm.score(seqs, batch_size or self.batch_size)

    __call__ = score


# ------------------------------------------------------------------------------------------------------ export
def export_reward_model(rm, backbone: Backbone, arch_cfg, out_dir: str | os.PathLike, *, domains: Sequence[str],
                        seed: int, batch_size: int = DEFAULT_BATCH_SIZE, backbone_cfg=None, dense: bool = True,
                        extra: dict | None = None) -> dict:
    """Write ``rm`` (fitted) to ``out_dir`` as described in the module docstring; returns what was written.
    ``dense=False`` leaves out the plain transformers copies (they double the size of a big-backbone export).

    The folder is assembled beside its destination and moved into place at the end, so an interrupted export
    never leaves a half-written ``out_dir``."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    template = prompt_template_of(backbone)

    save_model(rm, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})  # shared tensors stored once
    AutoConfig.from_pretrained(backbone.path, trust_remote_code=backbone.trust_remote_code).save_pretrained(
        tmp / BACKBONE_DIR)
    backbone.tokenizer.save_pretrained(tmp / BACKBONE_DIR)

    dense_dirs = {}
    for name, model in (rm.dense_models() if dense else {}).items():
        dense_dirs[name] = f"{DENSE_DIR}/{name}"
        save_dense(model, backbone.tokenizer, template, backbone.max_length, tmp / DENSE_DIR / name)

    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else copy.deepcopy(node)

    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": package_versions(),
        "arch": plain(arch_cfg),
        "backbone": {
            "name": backbone.name, "max_length": backbone.max_length, "prompt_template": template,
            "finetune": backbone.finetune, "lora_targets": list(backbone.lora_targets), "lora_r": backbone.lora_r,
            "lora_alpha": backbone.lora_alpha, "trust_remote_code": backbone.trust_remote_code,
            "config": plain(backbone_cfg) if backbone_cfg is not None else None,
        },
        "domains": list(domains), "seed": int(seed), "batch_size": int(batch_size),
        "structure": rm.export_structure(), "params": rm.param_counts(), "dense": dense_dirs, **(extra or {}),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    seconds = time.perf_counter() - t0
    log.info("reward model exported to %s (%.1f MB, %.2f s)", out_dir, size / 1e6, seconds)
    return {"path": str(out_dir), "dense": sorted(dense_dirs), "bytes": size, "seconds": seconds}


def save_dense(model: torch.nn.Module, tokenizer, prompt_template: str, max_length: int, out: Path) -> None:
    """``model`` as a plain transformers folder: LoRA adapters merged into a copy (the job's model is untouched),
    the text template in its config and the truncation length and side on its tokenizer."""
    if any("lora_" in name for name, _ in model.named_parameters()):
        model = merge_lora(copy.deepcopy(model))
    model.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["rmharness_prompt_template"] = prompt_template
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    saved = tokenizer.model_max_length, tokenizer.truncation_side
    try:
        # `truncation=True` then cuts at the harness's length and from the left: the prompt's start goes, the
        # response and the last token (where the reward is read) stay, as in the harness (data/schema.py).
        tokenizer.model_max_length, tokenizer.truncation_side = max_length, "left"
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.model_max_length, tokenizer.truncation_side = saved


# -------------------------------------------------------------------------------------------------------- load
class ExportedBackbone(Backbone):
    """The backbone of an export: its config and tokenizer, no weights. Models built from it are randomly
    initialised in the backbone's shape (with LoRA where the job had it); ``load_reward_model`` then fills every
    tensor from the export."""

    def __init__(self, path: Path, meta: dict):
        super().__init__(meta["max_length"], meta["lora_targets"], meta["trust_remote_code"], meta["finetune"],
                         meta["lora_r"], meta["lora_alpha"])
        self.name, self.path = meta["name"], Path(path)
        self.prompt_template = meta["prompt_template"]
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
        self.tokenizer.padding_side = "right"  # the pooling of every head reads the last real token

    def join(self, prompt: str, response: str) -> str:
        return self.prompt_template.format(prompt=prompt, response=response)

    def reward_model(self, seed: int, num_labels: int = 1, adapt: bool = True) -> torch.nn.Module:
        config = copy.deepcopy(self.config)
        config.num_labels = num_labels
        config.pad_token_id = self.tokenizer.pad_token_id
        with quiet_loading():
            model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32,
                                                                   trust_remote_code=self.trust_remote_code)
        if adapt and self.finetune == "lora":
            add_lora(model, self.lora_targets, self.lora_r, self.lora_alpha)
        return model


def read_meta(path: str | os.PathLike) -> dict:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no {META_FILE}; not a reward model exported by rmharness "
                                f"(a job writes one to <job_dir>/reward_model/)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                         f"this rmharness reads {FORMAT!r} version {FORMAT_VERSION}")
    return meta


def load_reward_model(path: str | os.PathLike, batch_size: int | None = None, device: str = "cpu",
                      precision: str = "fp32", compute: Compute | None = None) -> RewardScorer:
    """The exported RM at ``path`` (a folder written by ``export_reward_model``), ready to ``score`` on ``device``
    in ``precision`` (the job's keys, harness/device.py), or on an already resolved ``compute`` (a job's)."""
    from hydra.utils import instantiate

    from .archs.base import FitContext

    compute = compute or resolve_compute(device, precision)  # a missing device fails before anything is loaded

    path = Path(path)
    meta = read_meta(path)
    backbone = ExportedBackbone(path / BACKBONE_DIR, meta["backbone"])
    rm = instantiate(meta["arch"], _convert_="all")
    ctx = FitContext(backbone=backbone, train=None, cache=None, seed=meta["seed"], domains=list(meta["domains"]),
                     data_spec={})
    # Building seeds torch's global RNG: forked, so a caller's draws stay put. Random initialisation is skipped
    # (a 135M backbone: ~5 s per model) since every stored tensor is overwritten by the strict load below.
    with torch.random.fork_rng(devices=[]), no_init_weights():
        rm.restore(ctx, meta["structure"])
    load_model(rm, str(path / WEIGHTS_FILE), strict=True)
    rm.compute = compute  # score() moves the modules there
    return RewardScorer(rm, backbone.tokenizer, backbone.prompt_template, backbone.max_length,
                        batch_size or meta.get("batch_size", DEFAULT_BATCH_SIZE), info=meta)


class SequenceClassifierScorer:
    """Any transformers ``*ForSequenceClassification`` folder as a reward (logit 0), with ``score(prompts,
    responses)`` like ``RewardScorer``: the text is ``prompt_template`` (default: the folder's
    ``rmharness_prompt_template``, which the harness's dense exports carry) truncated at ``max_length`` tokens
    (default: the tokenizer's ``model_max_length``); batches in length order, right padding."""

    def __init__(self, path: str | os.PathLike, prompt_template: str | None = None, max_length: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", precision: str = "fp32",
                 compute: Compute | None = None):
        self.compute = compute or resolve_compute(device, precision, packing="off")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        self.model.to(self.compute.device)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        template = prompt_template or getattr(self.model.config, "rmharness_prompt_template", None)
        if template is None or "{prompt}" not in template or "{response}" not in template:
            raise ValueError(f"{path}: say how a prompt and a response become this model's text: a prompt_template "
                             f"with {{prompt}} and {{response}} (got {template!r})")
        self.prompt_template, self.batch_size = template, int(batch_size)
        self.max_length = int(max_length or self.tokenizer.model_max_length)
        self.info = {"path": str(path), "prompt_template": template}

    def join(self, prompt: str, response: str) -> str:
        return self.prompt_template.format(prompt=prompt, response=response)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        texts = [self.join(p, r) for p, r in zip(prompts, responses, strict=True)]
        out = torch.empty(len(texts))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = batch_size or self.batch_size
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="pt").to(self.compute.device)
            with self.compute.autocast():
                out[idx] = self.model(**enc).logits[:, 0].float().cpu()
        return out

    __call__ = score


def load_any_reward_model(path: str | os.PathLike, prompt_template: str | None = None,
                          max_length: int | None = None, batch_size: int | None = None, device: str = "cpu",
                          precision: str = "fp32", compute: Compute | None = None):
    """A harness export (``rmharness.json``) via ``load_reward_model``, else a transformers sequence-classifier
    folder via ``SequenceClassifierScorer``."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return load_reward_model(path, batch_size, device, precision, compute)
    if (path / "config.json").is_file():
        return SequenceClassifierScorer(path, prompt_template, max_length, batch_size or DEFAULT_BATCH_SIZE, device,
                                        precision, compute)
    raise FileNotFoundError(f"{path}: neither a reward model exported by rmharness ({META_FILE}) nor a "
                            "transformers model folder (config.json)")


# ------------------------------------------------------------------------------------------------------ TRL
def message_text(value, role: str) -> str:
    """A TRL prompt or completion as text: a string as is; a conversation (list of ``{role, content}``) by its
    last ``role`` message (the harness reads the last user turn as the prompt, as data.context=last_turn does)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        turns = [m["content"] for m in value if m.get("role") == role]
        if turns:
            return turns[-1]
    raise TypeError(f"expected a string or a list of {{role, content}} messages with a {role!r} turn, got "
                    f"{type(value).__name__}: {str(value)[:80]!r}")


def trl_reward_func(scorer: RewardScorer, name: str = "rmharness"):
    """A callable with TRL's ``reward_funcs`` contract (GRPOTrainer, RLOOTrainer): ``(prompts, completions,
    **kwargs) -> list[float]``, one reward per completion. Standard (string) and conversational (message list)
    inputs both work; the RM reads them through its own text template, which a plain ``p + c`` concatenation
    (what TRL does for a model passed directly) would not."""

    def reward(prompts, completions, **kwargs) -> list[float]:
        texts_p = [message_text(p, "user") for p in prompts]
        texts_c = [message_text(c, "assistant") for c in completions]
        return scorer.score(texts_p, texts_c).tolist()

    reward.__name__ = name  # TRL logs each reward function under its __name__
    return reward
