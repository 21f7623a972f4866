"""The reward-model training loops every architecture's ``fit`` calls: Bradley-Terry over preference pairs
(``train_bradley_terry``) and cross-entropy over domain labels (``train_classifier``, a domain router).

Both share one shape (``_loop_setup`` first, ``_end_loop`` last): the parameters a phase trains are recorded on the
model (``RewardModel.param_counts``'s "trainable"), the data order comes from the phase's own seed, one update rule
(harness/optim.py: AdamW, linear warm-up/decay, gradient clipping) steps them, several processes under torchrun train
through ``parallel.data_parallel``, and the state that scored best on validation is the one kept. A multi-phase
recipe calls them as often as it needs, each call one phase (its rows in metrics.json ``train_log``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import parallel
from ..accuracy import pair_correct
from ..data.schema import Batch, EncodedPairs, EncodedSequences
from ..device import CPU
from ..optim import make_optimizer_step
from ..progress import progress
from .base import FitContext, RewardModel, RewardOutput, TrainConfig


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_w - r_l), averaged: log 2 when the rewards are equal."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _loop_setup(model: RewardModel, params: list[nn.Parameter], cfg: TrainConfig, n_train: int, seed: int,
                forward: Callable):
    """What both loops do first: record the trained parameters, move the model to its device, seed the data order,
    count the steps, set up the processes (``parallel.data_parallel``: FSDP replaces the parameters by their shards)
    and build the one update rule over what they train. Returns (generator, steps per epoch, total steps, the
    ``parallel.Trainer`` with its ``optimizer_step(loss)``)."""
    model.mark_trained(params)
    model.to(model.compute.device)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-n_train // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    trainer = parallel.data_parallel(model, forward, params)
    trainer.optimizer_step = make_optimizer_step(trainer.params, cfg, total_steps, model.compute.grad_scaler())
    return gen, steps_per_epoch, total_steps, trainer


def _end_loop(model: RewardModel, trainer: parallel.Trainer, bar, best_state: list[torch.Tensor] | None) -> None:
    """What both loops do last: close the progress bar, put the best state on validation back into the trained
    parameters, end the trainer (FSDP's shards are gathered back into the model's own parameters; DDP's wrapper,
    with its gradient hooks, goes with the trainer when the loop returns, so a later phase never syncs through it)
    and leave the model in eval mode."""
    bar.close()
    if best_state is not None:
        with torch.no_grad():
            for p, best in zip(trainer.params, best_state, strict=True):
                p.copy_(best)
    trainer.close()
    model.eval()


def train_bradley_terry(
    model: RewardModel,
    params: list[nn.Parameter],
    train: EncodedPairs,
    val: EncodedPairs | None,
    cfg: TrainConfig,
    seed: int,
    ctx: FitContext | None = None,
    phase: str = "bt",
    forward: Callable[[Batch], RewardOutput] | None = None,
) -> dict:
    """Train ``params`` of ``model`` with the Bradley-Terry loss (+ ``cfg.score_l2`` times the rewards' L2, + the
    model's aux loss), AdamW, linear warm-up/decay, gradient clipping, length-bucketed batches; evaluate on ``val``
    ``evals_per_epoch`` times an epoch and keep the best state (early stopping). ``forward`` defaults to the
    model's own."""
    forward = forward or model
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(f"{phase}: nothing to train (no parameter requires grad)")
    gen, steps_per_epoch, total_steps, trainer = _loop_setup(model, params, cfg, len(train), seed, forward)
    params, optimizer_step = trainer.params, trainer.optimizer_step
    compute = model.compute
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    best_acc, best_state, since_best, step = -1.0, None, 0, 0
    t0 = time.perf_counter()
    stop = False
    bar = progress(total=total_steps, desc=f"reward model: training {phase}", unit="step")
    for epoch in range(cfg.epochs):
        model.train()
        for idx in train.bucketed_batches(cfg.batch_size, gen, cfg.bucket_chunks):
            share, weight = parallel.shard(idx)  # the whole batch, weight 1, in one process
            with compute.autocast():
                # Several processes (torchrun): each runs its share of every batch, DDP averages the gradients (or
                # FSDP shards the model and reduces them).
                out = trainer.forward(train.batch(share).to(compute.device))
                r_chosen, r_rejected = out.reward.float().chunk(2)
                loss = bradley_terry_loss(r_chosen, r_rejected)
                if cfg.score_l2:
                    # The BT loss sees reward differences only, so a reward's offset drifts freely (members of an
                    # ensemble end up apart); Coste et al. pin it, as Open-Assistant's RMLoss does:
                    # β · ½ (r_w² + r_l²), averaged, β = score_l2_reg = 0.001 (methods.md §1.1).
                    loss = loss + cfg.score_l2 * 0.5 * (r_chosen**2 + r_rejected**2).mean()
                if out.aux_loss is not None:
                    loss = loss + out.aux_loss
            if not parallel.all_agree(bool(torch.isfinite(loss))):
                raise FloatingPointError(f"{phase}: loss is {loss.item()} at step {step} (epoch {epoch}); "
                                         f"try a lower learning rate")
            optimizer_step(loss if weight == 1.0 else loss * weight)
            step += 1
            bar.update()
            if val is not None and (step % eval_every == 0 or step == total_steps):
                acc = evaluate_pairs(trainer.evaluate, val, model)
                batch_loss = parallel.batch_mean(loss.item(), weight)
                bar.set_postfix(loss=f"{batch_loss:.3f}", val_acc=f"{acc:.3f}", refresh=False)
                if ctx is not None:
                    ctx.log({"phase": phase, "step": step, "loss": batch_loss, "val_acc": acc})
                if acc > best_acc:
                    best_acc, since_best = acc, 0
                    best_state = [p.detach().clone() for p in params]
                else:
                    since_best += 1
                    if since_best >= cfg.patience:
                        stop = True
                        break
                model.train()
        if stop:
            break
    _end_loop(model, trainer, bar, best_state)
    seconds = time.perf_counter() - t0
    return {"phase": phase, "steps": step, "best_val_acc": best_acc, "seconds": seconds,
            "pairs_per_s": step * cfg.batch_size / max(seconds, 1e-9)}


@torch.inference_mode()
def evaluate_pairs(forward, pairs: EncodedPairs, model: nn.Module, batch_size: int = 256) -> float:
    """Accuracy of ``forward`` on encoded pairs against their chosen/rejected labels (the one rule: ties wrong).
    With several processes each scores its share and the counts are summed: every process gets the same accuracy."""
    model.eval()
    compute = getattr(model, "compute", CPU)
    correct = 0
    for idx in parallel.share_of(torch.arange(len(pairs))).split(batch_size):
        with compute.autocast():
            r_chosen, r_rejected = forward(pairs.batch(idx).to(compute.device)).reward.float().chunk(2)
        correct += int(pair_correct(r_chosen, r_rejected)[0].sum())
    return parallel.sum_of_shares(correct) / max(1, len(pairs))


def train_classifier(
    model: RewardModel,
    params: list[nn.Parameter],
    logits_fn: Callable[[Batch], torch.Tensor],
    train: EncodedSequences,
    val: EncodedSequences | None,
    cfg: TrainConfig,
    seed: int,
    ctx: FitContext | None = None,
    phase: str = "router",
) -> dict:
    """Cross-entropy training of a classifier over ``train.domain`` (e.g. a domain router reading
    ``batch.prompt_ids``); same optimiser, schedule and best-on-validation rule as ``train_bradley_terry``, with one
    validation per epoch."""
    params = [p for p in params if p.requires_grad]
    if (train.domain < 0).any():
        raise ValueError(f"{phase}: training a router needs a domain label on every example "
                         f"({int((train.domain < 0).sum())} of {len(train)} have none)")
    gen, steps_per_epoch, total_steps, trainer = _loop_setup(model, params, cfg, len(train), seed, logits_fn)
    params, optimizer_step = trainer.params, trainer.optimizer_step
    compute = model.compute
    best_acc, best_state, step = -1.0, None, 0
    t0 = time.perf_counter()
    bar = progress(total=total_steps, desc=f"reward model: training {phase}", unit="step")
    for _ in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
            share, weight = parallel.shard(idx)
            batch = train.batch(share).to(compute.device)
            with compute.autocast():
                loss = F.cross_entropy(trainer.forward(batch).float(), batch.domain)
            if not parallel.all_agree(bool(torch.isfinite(loss))):
                raise FloatingPointError(f"{phase}: loss is {loss.item()} at step {step}")
            optimizer_step(loss if weight == 1.0 else loss * weight)
            step += 1
            bar.update()
        acc = classifier_accuracy(trainer.evaluate, val if val is not None else train, model)
        if ctx is not None:
            ctx.log({"phase": phase, "step": step, "loss": parallel.batch_mean(loss.item(), weight), "val_acc": acc})
        if acc > best_acc:
            best_acc, best_state = acc, [p.detach().clone() for p in params]
    _end_loop(model, trainer, bar, best_state)
    return {"phase": phase, "steps": step, "best_val_acc": best_acc, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def classifier_accuracy(logits_fn, seqs: EncodedSequences, model: nn.Module, batch_size: int = 256) -> float:
    """Accuracy of ``logits_fn``'s argmax against ``seqs.domain``, summed over the processes' shares like
    ``evaluate_pairs``."""
    model.eval()
    compute = getattr(model, "compute", CPU)
    correct = 0
    for idx in parallel.share_of(torch.arange(len(seqs))).split(batch_size):
        batch = seqs.batch(idx).to(compute.device)
        with compute.autocast():
            correct += int((logits_fn(batch).argmax(-1) == batch.domain).sum())
    return parallel.sum_of_shares(correct) / max(1, len(seqs))
