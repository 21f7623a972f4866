"""GPU benchmark (issue 18, item 4): the harness's reward-model training loop against TRL's RewardTrainer on the
same data, scoring throughput and Best-of-N generation speed, printed as one JSON document.

    python benchmarks/gpu.py                       # one CUDA GPU: SmolLM2-135M and Qwen2.5-0.5B shapes, < 8 min
    python benchmarks/gpu.py --smoke               # tiny shapes on the CPU (CI), seconds
    python benchmarks/gpu.py --shapes smollm2-135m --out bench.json

No downloads: the models are built from their published configurations (SHAPES) with random weights
(``AutoModelForSequenceClassification.from_config``, ``num_labels=1``, pad 0), the data is synthetic token ids.
Setup as in shared/reference/perf_anchor_gpu.md: prompt and each response lognormal around ``--median-tokens``
(sigma 0.6), sequences capped at ``--max-tokens``; chosen responses draw more often from the low half of the
vocabulary, so the loss can fall. Batch 32 pairs (one forward of 64 sequences), lr 1e-5, clipping 1.0, one epoch.

Training variants, each from the same initial weights and on the same pairs, every one timed over one epoch after
an untimed warm-up of a few batches (the first run of a shape also pays kernel autotuning and flex compilation):
  harness         ``train.train_bradley_terry`` on a ``single`` RM: length-bucketed padded batches,
                  ``precision`` autocast over fp32 weights (harness/device.py);
  harness_packed  the same loop, each batch packed into one row (harness/packing.py; flex_attention or
                  flash-attention on CUDA, sdpa on the CPU);
  trl             TRL's RewardTrainer (the bench extra) on the same token ids (its processed-dataset format, so
                  no EOS is appended), bf16 on CUDA, no gradient checkpointing, no logging; random batches padded to
                  their longest sequence (its collator).
Reported: pairs/s, real (non-padding) tokens/s, peak GPU memory (CUDA only), the harness/TRL ratios, and whether
the goal (harness >= 2.0x TRL's pairs/s at no more peak memory) is met. Scoring: ``RewardModel.score`` over
``--score-sequences`` sequences of ``--score-tokens`` tokens. Generation: the harness's ``Policy.generate`` (HF
``generate``, pure sampling, KV cache) at each batch size in ``--gen-batches``, prompt 32 tokens, 64 new tokens.

Every number in the output comes from the run that prints it. TRL missing: its side is skipped, with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import io
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, Qwen2Config  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.archs.base import TrainConfig  # noqa: E402
from harness.archs.single import SingleRM  # noqa: E402
from harness.archs.train import train_bradley_terry  # noqa: E402
from harness.data.schema import EncodedPairs, EncodedSequences  # noqa: E402
from harness.device import resolve_compute  # noqa: E402
from harness.optimize.policy import Policy, response_mask  # noqa: E402

# The published configurations (config.json of HuggingFaceTB/SmolLM2-135M and Qwen/Qwen2.5-0.5B); random weights.
SHAPES = {
    "smollm2-135m": (LlamaConfig, dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                       max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
                                       rms_norm_eps=1e-5)),
    "qwen2.5-0.5b": (Qwen2Config, dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                       num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                       max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                                       rms_norm_eps=1e-6)),
}
# --smoke: a shape of the same family small enough for seconds on a CPU.
SMOKE_SHAPE = (LlamaConfig, dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=True))
# Pairs trained per shape on a GPU (the 0.5B shape gets half: it is ~4x the work per pair).
GPU_PAIRS = {"smollm2-135m": 2048, "qwen2.5-0.5b": 1024}
# Timed repetitions per shape on a GPU: the perf anchor quotes the second repetition of the 135M shape.
GPU_REPS = {"smollm2-135m": 2, "qwen2.5-0.5b": 1}
PAD_ID = 0
# Token ids below this are never drawn (0 is padding).
FIRST_TOKEN_ID = 2
# Chosen response tokens come from the low half of the vocabulary with this probability (rejected: uniform).
CHOSEN_BIAS = 0.6
LENGTH_SIGMA = 0.6
GOAL_SPEEDUP = 2.0
GIB = 2**30


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes and budgets, runs on the CPU in seconds")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {','.join(SHAPES)}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (the harness's device key)")
    p.add_argument("--precision", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--pairs", type=int, default=None, help="training pairs (default: per shape; smoke 64)")
    p.add_argument("--batch-pairs", type=int, default=None, help="pairs per step (default 32; smoke 8)")
    p.add_argument("--median-tokens", type=int, default=None, help="median prompt / response length (128; smoke 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="sequence cap (1024; smoke 48)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: per shape; smoke 1)")
    p.add_argument("--warmup-batches", type=int, default=3, help="batches of each variant's untimed warm-up")
    p.add_argument("--score-sequences", type=int, default=None, help="sequences scored (4096; smoke 32)")
    p.add_argument("--score-tokens", type=int, default=None, help="tokens per scored sequence (256; smoke 16)")
    p.add_argument("--gen-batches", default=None, help="generation batch sizes (64,512; smoke 4)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per generated response (64; smoke 8)")
    p.add_argument("--no-trl", action="store_true", help="skip TRL's RewardTrainer")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    small = args.smoke
    defaults = dict(batch_pairs=(8, 32), median_tokens=(8, 128), max_tokens=(48, 1024), score_sequences=(32, 4096),
                    score_tokens=(16, 256), gen_batches=("4", "64,512"), gen_tokens=(8, 64))
    for key, (smoke, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, smoke if small else full)
    return args


# ------------------------------------------------------------------------------------------------ data


def synthetic_pairs(n: int, vocab: int, median: int, cap: int, seed: int) -> EncodedPairs:
    """``n`` pairs of token ids: a shared prompt, a chosen and a rejected response, each lognormal around
    ``median`` tokens; a sequence (prompt + response) is cut to ``cap``."""
    gen = torch.Generator().manual_seed(seed)

    def lengths() -> torch.Tensor:
        draw = torch.empty(n).log_normal_(math.log(median), LENGTH_SIGMA, generator=gen)
        return draw.round().clamp(min=1).long()

    def tokens(count: int, biased: bool) -> torch.Tensor:
        ids = torch.randint(FIRST_TOKEN_ID, vocab, (count,), generator=gen)
        if biased:
            low = torch.rand(count, generator=gen) < CHOSEN_BIAS
            ids = torch.where(low, torch.randint(FIRST_TOKEN_ID, vocab // 2, (count,), generator=gen), ids)
        return ids

    prompt_len = lengths().clamp(max=cap - 1)
    prompts = [tokens(int(k), False) for k in prompt_len]

    def side(biased: bool) -> EncodedSequences:
        seqs = [torch.cat([p, tokens(int(k), biased)])[:cap] for p, k in zip(prompts, lengths(), strict=True)]
        lens = torch.tensor([len(s) for s in seqs])
        ids = torch.full((n, cap), PAD_ID, dtype=torch.long)
        pids = torch.full((n, cap), PAD_ID, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            pids[i, : prompt_len[i]] = prompts[i]
        return EncodedSequences(ids, lens, pids, prompt_len.clone(), torch.full((n,), -1))

    return EncodedPairs(side(True), side(False))


def padding_share(pairs: EncodedPairs, batches: list[torch.Tensor]) -> float:
    """Fraction of the tokens of right-padded pair batches (2B sequences padded to their longest) that are padding."""
    pair_len = torch.maximum(pairs.chosen.lengths, pairs.rejected.lengths)
    padded = sum(2 * len(i) * int(pair_len[i].max()) for i in batches)
    real = sum(int(pairs.chosen.lengths[i].sum() + pairs.rejected.lengths[i].sum()) for i in batches)
    return 1 - real / padded


# ------------------------------------------------------------------------------------------------ helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict):
    """Peak allocated GPU memory (GiB) of the block into ``out["peak_gib"]``; None off CUDA (the process's
    resident peak is not a per-run number)."""
    if device.type == "cuda":
        gc.collect()  # the previous run's model and optimizer state, if a reference cycle still holds them
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    sync(device)
    out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2) if device.type == "cuda" else None


def reward_model(shape, device: torch.device, init: dict | None):
    """A fresh sequence-classification model of ``shape`` on ``device`` (sdpa), holding ``init`` if given."""
    config_cls, kwargs = shape
    config = config_cls(**kwargs, num_labels=1, pad_token_id=PAD_ID)
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa",
                                                               dtype=torch.float32)
    if init is not None:
        model.load_state_dict(init)
    return model


def train_config(args, lr: float) -> TrainConfig:
    # One epoch, no validation (val=None), linear decay without warm-up, clipping 1.0: the perf anchor's setup.
    return TrainConfig(lr=lr, weight_decay=0.0, batch_size=args.batch_pairs, epochs=1, warmup=0.0,
                       max_grad_norm=1.0, evals_per_epoch=1, patience=1, bucket_chunks=16)


def run_harness(model, pairs: EncodedPairs, tcfg: TrainConfig, compute, seed: int) -> dict:
    rm = SingleRM()
    rm.model = model
    rm.compute = compute
    out: dict = {}
    with peak_memory(compute.device, out):
        t0 = time.perf_counter()
        train_bradley_terry(rm, list(model.parameters()), pairs, None, tcfg, seed)
        sync(compute.device)
        out["seconds"] = time.perf_counter() - t0
    return out


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


def trl_dataset(pairs: EncodedPairs):
    import datasets

    def ids(side: EncodedSequences) -> list[list[int]]:
        return [side.ids[i, : side.lengths[i]].tolist() for i in range(len(side))]

    return datasets.Dataset.from_dict({"chosen_ids": ids(pairs.chosen), "rejected_ids": ids(pairs.rejected)})


def trl_tokenizer():
    """The processing class TRL asks for: the data is already token ids, so it only has to name the pad token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": PAD_ID, "<eos>": 1}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def run_trl(model, dataset, tcfg: TrainConfig, compute, seed: int) -> dict:
    from trl import RewardConfig, RewardTrainer

    on_gpu = compute.device.type == "cuda"
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = RewardConfig(
            output_dir=tmp, per_device_train_batch_size=tcfg.batch_size, num_train_epochs=1, learning_rate=tcfg.lr,
            weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.max_grad_norm, lr_scheduler_type="linear",
            warmup_steps=0, seed=seed, bf16=on_gpu and compute.precision == "bf16",
            fp16=on_gpu and compute.precision == "fp16", gradient_checkpointing=False, use_cpu=not on_gpu,
            report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, max_length=None,
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=trl_tokenizer())
        with peak_memory(compute.device, out), contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            trainer.train()
            sync(compute.device)
            out["seconds"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------ sections


def bench_training(args, shape, compute, n_pairs: int, reps: int) -> dict:
    vocab = shape[1]["vocab_size"]
    pairs = synthetic_pairs(n_pairs, vocab, args.median_tokens, args.max_tokens, args.seed)
    tcfg = train_config(args, lr=1e-5)
    real_tokens = int(pairs.chosen.lengths.sum() + pairs.rejected.lengths.sum())
    random_batches = list(torch.randperm(n_pairs, generator=torch.Generator().manual_seed(args.seed))
                          .split(tcfg.batch_size))
    bucketed = pairs.bucketed_batches(tcfg.batch_size, torch.Generator().manual_seed(args.seed), tcfg.bucket_chunks)
    torch.manual_seed(args.seed)
    init = {k: v.clone() for k, v in reward_model(shape, compute.device, None).state_dict().items()}
    params = sum(v.numel() for k, v in init.items())

    packed = resolve_compute(str(compute.device), compute.precision, packing="on")
    padded = resolve_compute(str(compute.device), compute.precision, packing="off")
    variants = {
        "harness": lambda m, p: run_harness(m, p, tcfg, padded, args.seed),
        "harness_packed": lambda m, p: run_harness(m, p, tcfg, packed, args.seed),
    }
    notes = []
    if args.no_trl:
        notes.append("trl: skipped (--no-trl)")
    elif not trl_available():
        notes.append("trl: not installed (pip install -e .[bench]); its side is skipped")
    else:
        full = trl_dataset(pairs)
        variants["trl"] = lambda m, p: run_trl(m, full if len(p) == n_pairs else full.select(range(len(p))), tcfg,
                                               compute, args.seed)

    warm = pairs.subset(torch.arange(min(n_pairs, args.warmup_batches * tcfg.batch_size)))
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for run in variants.values():  # untimed warm-up: kernel selection, flex compilation, TRL's first setup
        run(reward_model(shape, compute.device, init), warm)
    for rep in range(reps):
        order = list(variants)[rep % len(variants):] + list(variants)[: rep % len(variants)]
        for name in order:
            runs[name].append(variants[name](reward_model(shape, compute.device, init), pairs))

    results = {}
    for name, rs in runs.items():
        last = rs[-1]  # the last repetition: later ones have paid every first-time cost
        results[name] = {"pairs_per_s": round(n_pairs / last["seconds"], 1),
                         "real_tokens_per_s": round(real_tokens / last["seconds"]),
                         "seconds": round(last["seconds"], 3), "peak_gib": last["peak_gib"],
                         "seconds_each_rep": [round(r["seconds"], 3) for r in rs]}
    if "trl" in results:
        trl = results["trl"]
        for name in ("harness", "harness_packed"):
            r = results[name]
            r["speedup_vs_trl"] = round(r["pairs_per_s"] / trl["pairs_per_s"], 3)
            if r["peak_gib"] is not None and trl["peak_gib"] is not None:
                r["peak_vs_trl"] = round(r["peak_gib"] / trl["peak_gib"], 3)
    goal = None
    if "trl" in results:
        best = max(("harness", "harness_packed"), key=lambda k: results[k]["pairs_per_s"])
        b = results[best]
        on_gpu = compute.device.type == "cuda"
        goal = {"target": f">= {GOAL_SPEEDUP}x TRL's pairs/s at no more peak memory", "best": best,
                "speedup": b["speedup_vs_trl"], "peak_vs_trl": b.get("peak_vs_trl"),
                # Judged on a GPU only: CPU speeds (--smoke) say nothing about it.
                "met": (b["speedup_vs_trl"] >= GOAL_SPEEDUP and b["peak_vs_trl"] <= 1.0) if on_gpu else None}
    return {"params": params, "pairs": n_pairs, "batch_pairs": tcfg.batch_size, "real_tokens": real_tokens,
            "padding_share": {"random_batches": round(padding_share(pairs, random_batches), 3),
                              "bucketed_batches": round(padding_share(pairs, bucketed), 3)},
            "reps": reps, "variants": results, "goal": goal, "notes": notes}


def bench_scoring(args, shape, compute) -> dict:
    vocab = shape[1]["vocab_size"]
    n, T = args.score_sequences, args.score_tokens
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(FIRST_TOKEN_ID, vocab, (n, T), generator=gen)

    def sequences(k: int) -> EncodedSequences:
        return EncodedSequences(ids[:k], torch.full((k,), T), ids[:k, :1].clone(), torch.ones(k, dtype=torch.long),
                                torch.full((k,), -1))

    rm = SingleRM()
    torch.manual_seed(args.seed)
    rm.model = reward_model(shape, compute.device, None).eval()
    rm.compute = compute
    batch = min(n, 256)
    rm.score(sequences(batch), batch)  # warm-up
    seqs = sequences(n)
    out: dict = {}
    with peak_memory(compute.device, out):
        t0 = time.perf_counter()
        rm.score(seqs, batch)
        sync(compute.device)
        seconds = time.perf_counter() - t0
    return {"sequences": n, "tokens_per_sequence": T, "batch": batch, "sequences_per_s": round(n / seconds, 1),
            "tokens_per_s": round(n * T / seconds), "peak_gib": out["peak_gib"]}


class _BenchPolicy(Policy):
    """The harness's sampling code (``Policy.generate``) around a random-init model: no files to prepare."""

    def __init__(self, tokenizer, max_new_tokens: int, batch: int, compute):
        super().__init__(temperature=1.0, max_new_tokens=max_new_tokens, generation_batch_size=batch)
        self.tokenizer = tokenizer
        self.compute = compute  # generate() autocasts by its precision


def bench_generation(args, shape, compute) -> dict:
    config_cls, kwargs = shape
    config = config_cls(**kwargs, pad_token_id=PAD_ID, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(args.seed)
    with torch.device(compute.device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
    tok = trl_tokenizer()
    prompt_tokens = min(32, args.max_tokens)
    rows = []
    for batch in [int(b) for b in str(args.gen_batches).split(",") if b.strip()]:
        policy = _BenchPolicy(tok, args.gen_tokens, batch, compute)
        ids = torch.randint(FIRST_TOKEN_ID, config.vocab_size, (batch, prompt_tokens),
                            generator=torch.Generator().manual_seed(args.seed)).to(compute.device)
        mask = torch.ones_like(ids)
        policy.generate(model, ids[:, :4], mask[:, :4], args.seed)  # warm-up
        out: dict = {}
        with peak_memory(compute.device, out):
            t0 = time.perf_counter()
            response = policy.generate(model, ids, mask, args.seed)
            sync(compute.device)
            seconds = time.perf_counter() - t0
        new_tokens = int(response_mask(response.cpu(), policy.eos_id).sum())
        rows.append({"batch": batch, "new_tokens": new_tokens, "new_tokens_per_s": round(new_tokens / seconds),
                     "seconds": round(seconds, 3), "peak_gib": out["peak_gib"]})
    return {"prompt_tokens": prompt_tokens, "max_new_tokens": args.gen_tokens, "batches": rows}


def environment(compute) -> dict:
    env = {"device": compute.describe(), "precision": compute.precision, "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads()}
    if trl_available():
        import trl

        env["trl"] = trl.__version__
    if compute.device.type == "cuda":
        props = torch.cuda.get_device_properties(compute.device)
        env["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / GIB, 1),
                      "cuda": torch.version.cuda}
    return env


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device_key = "cpu" if args.smoke and args.device == "auto" else args.device
    probe = resolve_compute(device_key, "fp32", packing="off")
    precision = args.precision or ("bf16" if probe.device.type == "cuda" else "fp32")
    compute = resolve_compute(device_key, precision, packing="off")
    shapes = {"smoke-llama": SMOKE_SHAPE} if args.smoke else {}
    if not args.smoke:
        for name in [s.strip() for s in args.shapes.split(",") if s.strip()]:
            if name not in SHAPES:
                raise SystemExit(f"--shapes: unknown shape {name!r}; choose from {','.join(SHAPES)}")
            shapes[name] = SHAPES[name]
    t_start = time.perf_counter()
    report = {"benchmark": "benchmarks/gpu.py", "smoke": args.smoke, "environment": environment(compute),
              "shapes": {}, "notes": []}
    if compute.device.type != "cuda":
        report["notes"].append("not a CUDA run: peak memory is not measured (null), and speeds say nothing about a GPU")
    for name, shape in shapes.items():
        n_pairs = args.pairs or (64 if args.smoke else GPU_PAIRS[name])
        reps = args.reps or (1 if args.smoke else GPU_REPS[name])
        t0 = time.perf_counter()
        section = {"training": bench_training(args, copy.deepcopy(shape), compute, n_pairs, reps),
                   "scoring": bench_scoring(args, shape, compute),
                   "generation": bench_generation(args, shape, compute)}
        section["seconds"] = round(time.perf_counter() - t0, 1)
        report["shapes"][name] = section
        if compute.device.type == "cuda":
            torch.cuda.empty_cache()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
