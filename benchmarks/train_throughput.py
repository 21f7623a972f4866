"""Reward-model training throughput (issue 11, item 2a/2b): the harness's own Bradley-Terry loop against a bare
torch loop and against TRL's RewardTrainer, on the same model, data and batch size (reference/perf_anchor.md).

    python benchmarks/train_throughput.py [--pairs 2000] [--reps 5] [--threads 1] [hydra overrides...]

Configurations, each one epoch over the same ``--pairs`` training pairs, from the same initial weights:
  H  the harness: ``harness.archs.train.train_bradley_terry`` on a ``single`` RM (val=None: no validation),
     its length-bucketed batches, its AdamW, schedule and clipping. Timed: the whole call.
  B  a bare torch loop (perf_anchor's B): random batches padded to their longest pair, fused AdamW, the same
     schedule and clipping. Timed: optimizer build to the last step's loss.
  C  the same bare loop on the harness's bucketed batches (perf_anchor's C; the same batches as H, in the same
     order), so H/C is the harness's overhead alone, B/C the gain of bucketing.
  T  TRL's RewardTrainer with its CPU traps turned off (bf16=False, gradient_checkpointing=False) and no
     logging or progress bar, on TRL's text format (prompt/chosen/rejected); the same model object and
     tokenizer, so it pools at the same last real token. Timed: ``trainer.train()``. TRL appends one EOS token
     to every sequence, so it reads slightly more real tokens: printed, and pairs/s is reported both ways.
Model construction, tokenization and TRL's dataset preparation are not timed. Each configuration runs once on a
few batches first (untimed warm-up); then ``--reps`` repetitions interleave the configurations, rotating their
order, and the paired per-repetition ratios are the numbers to read (the machine's load varies run to run).
Every number printed comes from this run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from harness.archs.base import TrainConfig  # noqa: E402
from harness.archs.single import SingleRM  # noqa: E402
from harness.archs.train import evaluate_pairs, train_bradley_terry  # noqa: E402
from harness.cache import ArtifactCache  # noqa: E402
from harness.data.schema import encode_pairs  # noqa: E402
from harness.job import build  # noqa: E402

CONFIGS = ("H", "B", "C", "T")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=2000, help="training pairs per run (one epoch)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of every configuration")
    # 1 by default: on a shared 2-core machine, 2 threads make each run wait on the busier core (runs of one
    # configuration then varied 10x here). perf_anchor used 2 on an idle machine: pass --threads 2 to compare.
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (perf_anchor used 2)")
    p.add_argument("--warmup-batches", type=int, default=5, help="batches of the untimed warm-up run")
    p.add_argument("--configs", default=",".join(CONFIGS), help="which of H,B,C,T to run")
    p.add_argument("overrides", nargs="*", help="hydra overrides of the job config (data, backbone, train, seed)")
    return p.parse_args()


def rm_of(model) -> SingleRM:
    """A ``single`` RM around an already built model (what SingleRM.build does with a FitContext)."""
    rm = SingleRM()
    rm.model = model
    return rm


def run_harness(model, pairs, tcfg: TrainConfig, seed: int) -> dict:
    rm = rm_of(model)
    t0 = time.perf_counter()
    train_bradley_terry(rm, list(rm.model.parameters()), pairs, None, tcfg, seed)
    return {"seconds": time.perf_counter() - t0}


def run_bare(model, pairs, batches: list[torch.Tensor], tcfg: TrainConfig, pad_id: int) -> dict:
    """perf_anchor's loop: one forward of the 2B chosen+rejected sequences padded to the batch's longest pair."""
    chosen, rejected = pairs.chosen.ids, pairs.rejected.ids
    pair_len = torch.maximum(pairs.chosen.lengths, pairs.rejected.lengths)
    losses = []
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True)
    sched = get_linear_schedule_with_warmup(opt, int(tcfg.warmup * len(batches)), len(batches))
    model.train()
    for idx in batches:
        T = int(pair_len[idx].max())
        ids = torch.cat([chosen[idx, :T], rejected[idx, :T]])
        logits = model(input_ids=ids, attention_mask=(ids != pad_id).long(), use_cache=False).logits.squeeze(-1)
        r_chosen, r_rejected = logits.chunk(2)
        loss = -F.logsigmoid(r_chosen - r_rejected).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    losses = torch.stack(losses).tolist()
    seconds = time.perf_counter() - t0
    model.eval()
    return {"seconds": seconds, "loss_mean": sum(losses) / len(losses)}


def trl_args(tcfg: TrainConfig, n_pairs: int, seed: int, out_dir: str):
    from trl import RewardConfig

    steps = -(-n_pairs // tcfg.batch_size)
    return RewardConfig(
        output_dir=out_dir, per_device_train_batch_size=tcfg.batch_size, num_train_epochs=1,
        learning_rate=tcfg.lr, weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.max_grad_norm,
        lr_scheduler_type="linear", warmup_steps=int(tcfg.warmup * steps), seed=seed,
        # TRL 1.12 turns both on by default, even on CPU: 11x slower here (perf_anchor). Off = the same fp32 work.
        bf16=False, gradient_checkpointing=False,
        report_to="none", save_strategy="no", eval_strategy="no", use_cpu=True, dataloader_num_workers=0,
        # No logging or progress bar: TRL's best case (perf_anchor measured them at 1-2%).
        logging_strategy="no", disable_tqdm=True,
        # Sequences are already within the backbone's max_length; TRL would drop (not truncate) longer ones.
        max_length=None,
    )


def run_trl(model, dataset, tokenizer, tcfg: TrainConfig, seed: int) -> dict:
    from trl import RewardTrainer

    tokens = {"real": 0, "padded": 0}

    def count(_module, _args, kwargs):
        tokens["real"] += int(kwargs["attention_mask"].sum())
        tokens["padded"] += kwargs["input_ids"].numel()

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = RewardTrainer(model=model, args=trl_args(tcfg, len(dataset), seed, out), train_dataset=dataset,
                                processing_class=tokenizer)
        # The Trainer prints its end-of-training summary dict even with logging off: keep it out of the table.
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
    handle.remove()
    model.eval()
    return {"seconds": seconds, "real_tokens": tokens["real"], "padded_tokens": tokens["padded"],
            "optim": str(trainer.args.optim), "threads": torch.get_num_threads()}


def main() -> None:
    args = parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or set(configs) - set(CONFIGS):
        raise SystemExit(f"--configs={args.configs!r}: choose from {','.join(CONFIGS)}")
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=args.overrides)
    seed = int(cfg.seed)
    cache = ArtifactCache(cfg.cache_dir)
    data = build(cfg.data, "data").prepare(cache, seed)
    backbone = build(cfg.backbone, "backbone").prepare(cache, lambda n: data.corpus(n, seed), seed,
                                                       data.world_spec(seed))
    tok = backbone.tokenizer
    # One epoch; validation off (val=None), so the loop's early stopping never ends a run early.
    tcfg = TrainConfig(**{**cfg.train, "epochs": 1})
    tcfg.validate()
    split = data.splits["train"]
    n = min(args.pairs, len(split))
    split = split.select(range(n))
    pairs = encode_pairs(split, tok, backbone.join, data.domains, backbone.max_length)
    val = encode_pairs(data.splits["val"], tok, backbone.join, data.domains, backbone.max_length)
    steps = -(-n // tcfg.batch_size)

    # H's batches, recomputed outside the timing exactly as train_bradley_terry draws them (same seed, one epoch);
    # C runs on these very batches. B: random batches, as perf_anchor's B.
    bucketed = pairs.bucketed_batches(tcfg.batch_size, torch.Generator().manual_seed(seed), tcfg.bucket_chunks)
    random_batches = list(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(tcfg.batch_size))
    pair_len = torch.maximum(pairs.chosen.lengths, pairs.rejected.lengths)
    real = int(pairs.chosen.lengths.sum() + pairs.rejected.lengths.sum())
    tokens = {c: {"real": real} for c in ("H", "B", "C")}
    tokens["H"]["padded"] = tokens["C"]["padded"] = sum(2 * len(i) * int(pair_len[i].max()) for i in bucketed)
    tokens["B"]["padded"] = sum(2 * len(i) * int(pair_len[i].max()) for i in random_batches)

    trl_data = None
    if "T" in configs:
        import datasets
        from trl import RewardTrainer

        # TRL's explicit-prompt text format; prompt + chosen must be exactly the text the harness tokenizes.
        prompts = [backbone.join(p, "") for p in split["prompt"]]
        text = datasets.Dataset.from_dict({"prompt": prompts, "chosen": split["chosen"], "rejected": split["rejected"]})
        for p, c, full in zip(split["prompt"], split["chosen"], [backbone.join(p, c) for p, c in
                                                                  zip(split["prompt"], split["chosen"], strict=True)],
                              strict=True):
            if backbone.join(p, "") + c != full:
                raise SystemExit("backbone.join does not end with the response: TRL's prompt+chosen would differ")
        with tempfile.TemporaryDirectory() as out:
            # Tokenized once here (TRL's _prepare_dataset), reused by every timed run: not part of the timing.
            trl_data = RewardTrainer(model=backbone.reward_model(seed), args=trl_args(tcfg, n, seed, out),
                                     train_dataset=text, processing_class=tok).train_dataset
        same = sum(list(t[:-1]) == pairs.chosen.ids[i, : pairs.chosen.lengths[i]].tolist() and t[-1] == tok.eos_token_id
                   for i, t in enumerate(trl_data["chosen_ids"]))
        same += sum(list(t[:-1]) == pairs.rejected.ids[i, : pairs.rejected.lengths[i]].tolist()
                    and t[-1] == tok.eos_token_id for i, t in enumerate(trl_data["rejected_ids"]))
        print(f"TRL tokenization: {same}/{2 * n} sequences = the harness's token ids + one EOS", flush=True)
        if len(trl_data) != n:
            raise SystemExit(f"TRL kept {len(trl_data)} of {n} pairs")

    def run(config: str, n_pairs: int) -> dict:
        # Same initial weights for every configuration (the new head is seeded in reward_model).
        model = backbone.reward_model(seed)
        if config == "H":
            sub = pairs if n_pairs == n else pairs.subset(torch.arange(n_pairs))
            out = run_harness(model, sub, tcfg, seed)
        elif config in ("B", "C"):
            batches = random_batches if config == "B" else bucketed
            if n_pairs < n:
                batches = batches[: -(-n_pairs // tcfg.batch_size)]
            out = run_bare(model, pairs, batches, tcfg, tok.pad_token_id)
        else:
            out = run_trl(model, trl_data if n_pairs == n else trl_data.select(range(n_pairs)), tok, tcfg, seed)
        out["val_acc"] = evaluate_pairs(rm_of(model), val, model)
        return out

    load = os.getloadavg()
    print(f"model: {sum(p.numel() for p in backbone.reward_model(seed).parameters()):,} parameters | "
          f"{n} pairs, batch {tcfg.batch_size}, {steps} steps, lr {tcfg.lr}, warm-up {tcfg.warmup} | "
          f"threads {args.threads} | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    for c in configs:  # untimed warm-up
        run(c, min(n, args.warmup_batches * tcfg.batch_size))
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for rep in range(args.reps):
        order = configs[rep % len(configs):] + configs[: rep % len(configs)]
        for c in order:
            r = run(c, n)
            results[c].append(r)
            print(f"rep {rep} {c}: {r['seconds']:.2f} s  ({n / r['seconds']:.0f} pairs/s, val acc {r['val_acc']:.3f})",
                  flush=True)
    if "T" in configs:
        last = results["T"][-1]
        tokens["T"] = {"real": last["real_tokens"], "padded": last["padded_tokens"]}
        print(f"TRL: optim={last['optim']}, torch threads during train={last['threads']}")

    names = {"H": "harness train_bradley_terry", "B": "bare loop, random batches", "C": "bare loop, bucketed (H's)",
             "T": "TRL RewardTrainer (fp32)"}
    print(f"\n{'config':<32} {'median s':>9} {'min-max s':>13} {'pairs/s':>8} {'real tok':>9} {'padded tok':>10} "
          f"{'real tok/s':>10} {'val acc':>8}")
    for c in configs:
        secs = [r["seconds"] for r in results[c]]
        med = statistics.median(secs)
        acc = statistics.median(r["val_acc"] for r in results[c])
        print(f"{c} {names[c]:<30} {med:>9.2f} {min(secs):>6.2f}-{max(secs):<6.2f} {n / med:>8.0f} "
              f"{tokens[c]['real']:>9,} {tokens[c]['padded']:>10,} {tokens[c]['real'] / med:>10,.0f} {acc:>8.3f}")
    print("\nratios (time; > 1 means the first is slower): ratio of medians | paired per-rep median (min-max)")
    for a, b, target in (("H", "B", "target <= 1.15"), ("T", "H", "target > 1: harness faster"), ("H", "C", ""),
                         ("B", "C", ""), ("T", "B", "")):
        if a in configs and b in configs:
            paired = [ra["seconds"] / rb["seconds"] for ra, rb in zip(results[a], results[b], strict=True)]
            ratio = statistics.median(r["seconds"] for r in results[a]) / statistics.median(
                r["seconds"] for r in results[b])
            print(f"{a}/{b}: {ratio:.3f} | {statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f})"
                  f"  {target}")
    if "T" in configs and "H" in configs:
        per_token = (tokens["H"]["real"] / statistics.median(r["seconds"] for r in results["H"])) / (
            tokens["T"]["real"] / statistics.median(r["seconds"] for r in results["T"]))
        print(f"T/H per real token (TRL's extra EOS counted as work): {per_token:.3f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
