"""One job, top to bottom: validate, then the stages of ``_run`` -- set up, prepare the data and backbone, fit the
architecture, evaluate it (test pairs, length bias, then benchmarks), export it, run the optimisation studies, write
the results.

``validate`` reads the config once into ``JobInputs``; each stage takes what it needs from there and from the
stages before it (``Prepared``, ``ScoredTestPairs``), never from the config.

Everything the input alone can show to be wrong is checked first (``validate``), before any data is prepared or
model trained: a user error costs seconds and ends as ``status: user_error`` with one message naming the key or
file (harness/errors.py). A failure at any later point still leaves a metrics.json with status "failed", the
error and every metric computed before it. A rerun of a job whose metrics.json says "ok" for the same config
and the same data content returns it without recomputing (resume).
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import parallel
from .archs.base import FitContext, TrainConfig
from .cache import ArtifactCache
from .cost import BackbonePasses, cost_block
from .data.hf import HubUnavailableError
from .data.readers import DataFormatError
from .data.schema import EncodedPairs, drop_identical_inputs, encode_pairs, input_report
from .device import Compute, compute_of, place
from .errors import UserError, full_errors
from .evaluate import active_per_response, evaluate_architecture, split_accuracy
from .export import EXPORT_DIR, RewardScorer, export_reward_model, prompt_template_of
from .length_bias import length_bias_blocks
from .loggers import MetricLogger
from .packing import note_padded
from .progress import Stages, config_name
from .provenance import provenance
from .results import CURVES_FILE, METRICS_FILE, read_metrics, write_curves, write_metrics, write_test_scores
from .rewardbench import check_benchmarks, evaluate_benchmarks
from .seeds import SEED_LIMIT, set_seed
from .threads import job_threads

log = logging.getLogger(__name__)

# The primary config: its keys and default groups are the only top-level keys a job accepts.
PRIMARY_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "config.yaml"
# Hydra's own keys in a config node that are not constructor arguments.
HYDRA_NODE_KEYS = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}


def build(node: DictConfig, where: str, **kwargs):
    """``hydra.utils.instantiate`` with errors that name the config group and the offending key.

    A constructor that rejects its arguments (ValueError, TypeError, a missing file, a missing optional package)
    and a ``_target_`` that names no class are user errors; a module of the harness that fails to import while
    its class is located is an internal error and keeps its traceback."""
    check_node_keys(node, where)
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if cause is None or isinstance(cause, (ValueError, TypeError, FileNotFoundError, IsADirectoryError)) or (
                isinstance(cause, ImportError) and not target_module_broken(cause, str(node.get("_target_", "")))):
            message = str(cause or e)
            raise UserError(message if message.startswith(where) else f"{where}: {message}") from e
        raise


def target_module_broken(error: ImportError, target: str) -> bool:
    """Whether locating ``target`` failed inside a module that exists (its own imports are broken) rather than
    because the path names no module or attribute (the user's spelling). Hydra's locator wraps the first error in
    an ImportError "Error loading '<target>'"; an ImportError a constructor raises itself is not a locating one."""
    if not str(error).startswith(f"Error loading '{target}'"):
        return False
    inner = error.__cause__
    if isinstance(inner, AttributeError):
        return False
    if isinstance(inner, ModuleNotFoundError) and inner.name and target.startswith(inner.name):
        return False  # the named module itself is not there
    return inner is not None


def check_node_keys(node: DictConfig, where: str) -> None:
    """Keys of a ``_target_`` node that its constructor does not take, named before anything is built."""
    try:
        target = get_class(node["_target_"])
    except Exception:  # noqa: BLE001 - instantiate reports an unknown target itself, with its own words
        return
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(node) - set(params) - HYDRA_NODE_KEYS)
    if unknown:
        valid = sorted(p for p in params if p != "self")
        raise UserError(f"{', '.join(f'{where}.{k}' for k in unknown)}: not a setting of {where} "
                        f"({node['_target_']}, whose settings are: {', '.join(valid) or 'none'}). Check the "
                        "spelling, or drop the override.")


@dataclass
class EvalSettings:
    """``eval``: how the fitted reward model is evaluated."""

    batch_size: int  # sequences per scoring batch: the RM, its views, benchmarks, lm-eval, the studies' rewards
    benchmarks: list  # benchmark entries, checked (harness/rewardbench.py); empty: none
    lm_eval_tasks: list[str]  # lm-eval tasks the RM answers (harness/lmeval.py); empty: none
    lm_eval_limit: int | None  # questions per lm-eval task; None: all


@dataclass
class ExportSettings:
    """``export_dense`` and the config nodes the export records, so that harness/export.py can rebuild the RM."""

    arch_cfg: DictConfig
    backbone_cfg: DictConfig
    dense: bool  # the plain transformers copies too


@dataclass
class JobInputs:
    """The job's config, checked and instantiated; nothing prepared or trained yet. The stages read their settings
    here, never in the config itself."""

    seed: int
    config: dict  # resolved, as recorded in metrics.json
    data_fingerprint: str  # a hash of the data's content (files), of how it is split and of its gold
    train: TrainConfig
    data: object
    # gold=rm relabels the data with a gold RM, gold=verifier replaces it by verifier-labelled policy answers to task
    # prompts (harness/gold.py); gold=synthetic keeps it
    gold: object | None
    backbone: object
    arch: object
    studies: dict
    compute: Compute  # device and precision (harness/device.py)
    studies_skipped: list  # selected in opt but read in gold units, and the job has no gold reward
    threads: int | str | None  # the ``threads`` setting (harness/threads.py resolves auto)
    strategy: str  # parallel.strategy, used under torchrun (harness/parallel.py)
    cache_dir: str
    data_name: str  # what stage lines call the data and backbone choices (progress.config_name)
    backbone_name: str
    policy: DictConfig  # the policy the studies optimise (and gold=rm / gold=verifier sample from)
    eval: EvalSettings
    export: ExportSettings | None  # None: export=false


def run_job(cfg: DictConfig, job_dir: Path, choices: dict, overrides: list[str]) -> dict:
    job_dir = Path(job_dir)
    metrics: dict = {"choices": choices, "seed": None, "status": "running", "error": None,
                     "overrides": overrides, "job_dir": str(job_dir), "config": None,
                     **provenance()}  # versions + git commit: what produced the numbers, failed jobs too
    t_job = time.perf_counter()
    metric_logger = MetricLogger()
    try:
        job = validate(cfg, job_dir)
        metrics.update(seed=job.seed, config=job.config, data_fingerprint=job.data_fingerprint)
        previous = finished_result(job_dir, job.config, job.data_fingerprint)
        if previous is not None:
            return previous
        if parallel.rank() == 0:  # one set of live curves per job, not one per data-parallel process
            metric_logger = build(cfg.logger, "logger", job_dir=str(job_dir))
        metric_logger.log_config(job.config)
        _run(job, job_dir, metrics, metric_logger)
        metrics["status"] = "ok"
    except UserError as e:
        metrics["status"], metrics["error"] = "user_error", str(e)
        log.error("%s", e, exc_info=full_errors())
    except Exception as e:  # noqa: BLE001 - any failure becomes a status row, never a lost sweep
        metrics["status"] = "failed"
        metrics["error"] = f"{type(e).__name__}: {e}"
        log.error("job failed: %s\n%s", metrics["error"], traceback.format_exc())
    metrics.setdefault("timing_s", {})["total"] = time.perf_counter() - t_job
    if "cost" in metrics:
        metrics["cost"]["wall_s"] = metrics["timing_s"]["total"]
    metric_logger.final(metrics)
    metric_logger.close()
    try:
        if parallel.rank() == 0:  # data-parallel processes other than rank 0 only train (harness/parallel.py)
            write_metrics(job_dir, metrics)
    except OSError as e:  # e.g. metrics.json is a directory: the error above already says so
        log.error("could not write %s: %s", job_dir / METRICS_FILE, e)
    return metrics


# ------------------------------------------------------------------------------------------------ resume
def finished_result(job_dir: Path, config: dict, fingerprint: str) -> dict | None:
    """The metrics of an earlier run of this very job (same config, same data content), else None."""
    path = job_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        previous = read_metrics(job_dir)
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): the job is recomputed", path, e)
        return None
    if previous.get("status") != "ok" or previous.get("config") != config:
        return None
    if previous.get("data_fingerprint") != fingerprint:
        log.info("the data changed since %s was written: the job is recomputed", path)
        return None
    log.info("job already done in %s: not recomputed", job_dir)
    previous["resumed"] = True
    return previous


# ------------------------------------------------------------------------------------------------ validate
@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Inside, an exception of one of ``kinds`` is the user's to fix: it becomes a UserError with its message."""
    try:
        yield
    except UserError:
        raise
    except kinds as e:
        raise UserError(str(e)) from e


def resolve(cfg: DictConfig) -> dict:
    """The config as plain data, every interpolation resolved; unknown keys and missing values named."""
    primary = OmegaConf.load(PRIMARY_CONFIG)
    groups = {name for entry in primary.defaults if isinstance(entry, DictConfig) for name in entry}
    known = (set(primary) - {"defaults"}) | groups | {"hydra"}
    unknown = [k for k in cfg if k not in known]
    if unknown:
        raise UserError(f"{', '.join(map(str, unknown))}: unknown top-level key; valid: {sorted(known - {'hydra'})}. "
                        "Check the spelling (a `+` adds a key that does not exist).")
    for section, declared in primary.items():
        if section != "hydra" and isinstance(declared, DictConfig) and section in cfg:
            extra = sorted(set(cfg[section]) - set(declared))
            if extra:
                raise UserError(f"{', '.join(f'{section}.{k}' for k in extra)}: unknown key; valid: "
                                f"{sorted(declared)}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError("; ".join(f"{k} is required: pass {k}={'PATH' if k.endswith('path') else 'VALUE'}"
                                  for k in missing))
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise UserError(f"config: {e}") from e


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise UserError(f"seed={seed!r} must be an integer in [0, 2**32), e.g. seed=0")
    return seed


def check_eval(node: DictConfig) -> None:
    for key in ("batch_size", "lm_eval_limit"):
        v = node[key]
        if v is None and key == "lm_eval_limit":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"eval.{key}={v!r} must be an integer >= 1{' or null' if key == 'lm_eval_limit' else ''}")
    tasks = node.lm_eval_tasks
    if not OmegaConf.is_list(tasks) or not all(isinstance(t, str) for t in tasks):
        raise UserError(f"eval.lm_eval_tasks={tasks!r} must be a list of task names, e.g. [test_prefs]")


def check_outputs(job_dir: Path) -> None:
    """The job can write its result files: the directory is writable and no result name is taken by a directory."""
    for name in (METRICS_FILE, CURVES_FILE):
        path = job_dir / name
        if path.exists() and not path.is_file():
            raise UserError(f"{path} exists and is not a file, so the job could not write its results there: "
                            "remove it, or run in another directory (hydra.run.dir=DIR)")
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=job_dir):
            pass
    except OSError as e:
        raise UserError(f"the job directory {job_dir} is not writable ({e}): choose another with "
                        "hydra.run.dir=DIR (hydra.sweep.dir=DIR for -m)") from e


def without_gold_studies(studies: dict, has_gold: bool, data_name: str) -> tuple[dict, list[str]]:
    """``studies`` less the ones read in gold units (Best-of-N, PPO) when the job has no gold reward, and those
    left out, with one line saying so: real preference data runs with the default ``opt`` and measures what it can."""
    from .optimize.study import GOLD_STUDIES

    skipped = [] if has_gold else sorted(set(studies) & set(GOLD_STUDIES))
    if skipped:
        log.info("opt=%s skipped: data=%s has no gold reward to read Best-of-N / PPO against (give one with gold=rm "
                 "gold.path=DIR; opt=none silences this line)", skipped, data_name)
    return {k: v for k, v in studies.items() if k not in skipped}, skipped


def validate(cfg: DictConfig, job_dir: Path) -> JobInputs:
    """Every check the input alone allows, before anything is prepared or trained. Objects with a ``check()``
    (backbones, labelers) verify there what their config points at — model files, credentials — without loading."""
    from .optimize.study import check_studies

    config = resolve(cfg)
    seed = check_seed(cfg.seed)
    set_seed(seed)  # constructors below run seeded too (none draws today; set_up seeds again before preparing)
    # While only the config is read, a rejected value or a missing file can only be the user's to fix.
    with user_errors(ValueError, TypeError, FileNotFoundError, IsADirectoryError, HubUnavailableError):
        if cfg.threads not in (None, "auto") and (isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int)
                                                  or cfg.threads < 1):
            raise UserError(f"threads={cfg.threads!r} must be an integer >= 1 or auto")
        train_cfg = TrainConfig(**cfg.train)
        train_cfg.validate()
        compute = compute_of(cfg)  # a device that is not there: named here, before anything is built
        strategy = parallel.strategy_of(cfg)
        check_eval(cfg.eval)
        check_outputs(job_dir)
        data = build(cfg.data, "data")
        backbone = build(cfg.backbone, "backbone")
        # The architecture before any preparation: a misspelt arch key costs a second, not the data and backbone.
        arch = build(cfg.arch, "arch")
        gold = build(cfg.gold, "gold") if "gold" in cfg else None
        for part in (backbone, getattr(arch, "labeler", None)):  # an arch's own labeler (arch/labeler) too
            if callable(getattr(part, "check", None)):
                part.check()
        benchmarks = OmegaConf.to_container(cfg.eval.benchmarks, resolve=True) if cfg.eval.get("benchmarks") else []
        check_benchmarks(benchmarks)
        # A gold reward comes with the data (the world's) or from a gold RM that relabels it (gold=rm).
        has_gold = hasattr(data, "gold") or callable(getattr(gold, "identity", None))
        data_name = config_name(cfg.data)
        studies, skipped = without_gold_studies(dict(cfg.get("opt") or {}), has_gold, data_name)
        if studies:
            check_studies(studies, cfg.policy, has_gold, getattr(data, "name", type(data).__name__))
            if callable(getattr(gold, "check_studies", None)):  # gold=verifier: its held-out prompts suffice
                gold.check_studies(studies)
        # The data source's cache key (file contents for jsonl, hub fingerprints for hf, the world's config for
        # synthetic, with the split fractions and the seed), and what a gold RM that relabels it is.
        identity = {"data": data.spec(seed),
                    "gold": gold.identity() if callable(getattr(gold, "identity", None)) else None}
        fingerprint = ArtifactCache.key("data", identity)
    evaluation = EvalSettings(batch_size=cfg.eval.batch_size, benchmarks=benchmarks,
                              lm_eval_tasks=list(cfg.eval.lm_eval_tasks), lm_eval_limit=cfg.eval.lm_eval_limit)
    export = None
    if cfg.get("export", True):
        export = ExportSettings(arch_cfg=cfg.arch, backbone_cfg=cfg.backbone, dense=cfg.get("export_dense", True))
    return JobInputs(seed=seed, config=config, data_fingerprint=fingerprint, train=train_cfg, data=data, gold=gold,
                     backbone=backbone, arch=arch, studies=studies, compute=compute, studies_skipped=skipped,
                     threads=cfg.threads, strategy=strategy, cache_dir=cfg.cache_dir, data_name=data_name,
                     backbone_name=config_name(cfg.backbone), policy=cfg.policy, eval=evaluation, export=export)


# ------------------------------------------------------------------------------------------------ run
def _run(job: JobInputs, job_dir: Path, out: dict, metric_logger: MetricLogger) -> None:
    """The job's stages, in order. Each writes its results into ``out`` (the job's metrics) as soon as they exist,
    so a later failure keeps them."""
    set_up(job, out)
    # data, backbone, reward model, evaluation; then the policy and each study.
    stages = Stages(4 + (1 + len(job.studies) if job.studies else 0))
    prepared = prepare_data(job, stages, out)
    fit_passes = fit_reward_model(job, prepared, job_dir, metric_logger, stages, out)
    if not leave_data_parallel(out):
        return
    test_scores = evaluate_on_test(job, prepared, fit_passes, stages, out)
    write_test_scores(job_dir, test_scores.chosen, test_scores.rejected, test_scores.pairs, test_scores.views)
    evaluate_length_bias(job, prepared, out)
    evaluate_on_benchmarks(job, prepared, job_dir, out)
    if job.export is not None:
        export_model(job, prepared, job_dir, out)
    curves = optimization_studies(job, prepared, metric_logger, stages, out) if job.studies else []
    write_curves(job_dir, curves)


def set_up(job: JobInputs, out: dict) -> None:
    """Threads, the processes under torchrun, where every model runs, and the global generators' seed."""
    out["threads"] = job_threads(job.threads)
    torch.set_num_threads(out["threads"])
    parallel.init(job.compute, job.strategy)  # several processes under torchrun; nothing otherwise
    # Everything that runs a model runs it there: the gold RM, tiny's pre-training, the RM, the RM's labeler.
    place(job.compute, job.gold, job.backbone, job.arch, getattr(job.arch, "labeler", None))
    note_padded(job.arch, job.compute)  # architectures that cannot pack say so once
    set_seed(job.seed)
    out.setdefault("timing_s", {})
    if job.studies_skipped:
        out["opt_skipped"] = job.studies_skipped


@dataclass
class Prepared:
    """What the fit, evaluation and studies work on: the prepared data and backbone, the cache they came from, and
    the three splits encoded for the backbone."""

    data: object  # the data source, prepared (relabelled by the gold RM under gold=rm; gold=verifier's pairs)
    backbone: object  # harness.backbones.Backbone, prepared
    cache: ArtifactCache
    train: EncodedPairs  # less the pairs whose two inputs are identical (no gradient)
    val: EncodedPairs
    test: EncodedPairs


def prepare_data(job: JobInputs, stages: Stages, out: dict) -> Prepared:
    """The data (built once per seed, then cached; relabelled by a gold RM, or replaced by the verifier's pairs,
    where ``gold`` says so), the backbone (pre-trained or converted once, then cached) and the encoded splits;
    ``out["data"]``: per split, its pairs, truncated and identical inputs (data/schema.py); ``out["gold"]``: per
    split, what the gold's relabelling reports (its pairs, the labels' agreement with gold; gold=verifier: the
    policy's pass and format rates), under a gold that relabels."""
    seed, timing = job.seed, out["timing_s"]
    cache = ArtifactCache(job.cache_dir)
    t0 = time.perf_counter()
    # Malformed data files (DataFormatError), a data set the hub cannot give, a model path with no model in it.
    with user_errors(DataFormatError, FileNotFoundError, IsADirectoryError, HubUnavailableError):
        if getattr(job.gold, "replaces_data", False):  # gold=verifier: its task set is the data
            stages.next(f"data: gold={job.gold.name} pairs of the policy's answers (sampled once, then cached)")
            data = job.gold.apply(None, job.policy, cache, seed)
        else:
            stages.next(f"data: {job.data_name} preference pairs (built once per seed, then cached)")
            data = job.data.prepare(cache, seed)
            if job.gold is not None:
                data = job.gold.apply(data, job.policy, cache, seed)
        if job.gold is not None and (relabelled := getattr(data, "stats", None)) is not None:  # gold=rm, =verifier
            out["gold"] = relabelled  # per split: pairs, label agreement (gold=verifier: pass rates)
        stages.next(f"backbone: {job.backbone_name} (pre-trained or converted once, then cached)")
        backbone = job.backbone.prepare(
            cache, corpus=lambda n: data.corpus(n, seed), seed=seed, world_spec=data.world_spec(seed)
        )
    timing["prepare"] = time.perf_counter() - t0

    inputs: dict[str, dict] = {}
    out["data"] = inputs

    def encode(split: str) -> EncodedPairs:
        pairs = encode_pairs(data.splits[split], backbone.tokenizer, backbone.join, data.domains,
                             backbone.max_length)
        inputs[split] = input_report(pairs, split, backbone.max_length)
        return pairs

    train, val, test = encode("train"), encode("val"), encode("test")
    # Identical inputs give no gradient: training leaves them out; evaluation keeps them (a tie counts wrong).
    train, data.splits["train"], inputs["train"]["dropped"] = drop_identical_inputs(train, data.splits["train"],
                                                                                    backbone.max_length)
    return Prepared(data=data, backbone=backbone, cache=cache, train=train, val=val, test=test)


def fit_reward_model(job: JobInputs, prepared: Prepared, job_dir: Path, metric_logger: MetricLogger, stages: Stages,
                     out: dict) -> BackbonePasses:
    """The architecture's ``fit`` on the training pairs (every process under torchrun), seeded afresh; ``out``:
    its training log (``train_log``), its own report (``fit``) and where it ran (``compute``). Returns the backbone
    passes fit made, for the cost block."""
    seed, arch = job.seed, job.arch
    ctx = FitContext(backbone=prepared.backbone, train=job.train, cache=prepared.cache, seed=seed,
                     domains=prepared.data.domains, data_spec=prepared.data.spec(seed), data=prepared.data,
                     artifact_dir=job_dir, metric_logger=metric_logger)
    set_seed(seed)
    t0 = time.perf_counter()
    stages.next(f"reward model: training {type(arch).__name__} on {len(prepared.train)} pairs")
    with BackbonePasses() as fit_passes:
        arch.fit(prepared.train, prepared.val, ctx)
    out["timing_s"]["train"] = time.perf_counter() - t0
    out["compute"] = {"device": str(job.compute.device), "precision": job.compute.precision,
                      "processes": parallel.world_size()}
    out["train_log"] = [r for r in ctx.logs if "best_val_acc" in r]
    if report := arch.fit_report():
        out["fit"] = report
    return fit_passes


def leave_data_parallel(out: dict) -> bool:
    """After a data-parallel fit, the processes part: rank 0 alone goes on (evaluation, export, studies). Whether
    this process goes on (always, in a job of one process)."""
    if parallel.world_size() == 1:
        return True
    out["compute"]["strategy"] = parallel.strategy()
    parallel.barrier()
    parallel.shutdown()
    if parallel.rank() != 0:
        out["data_parallel"] = {"rank": parallel.rank()}
        return False
    return True


@dataclass
class ScoredTestPairs:
    """The fitted RM's rewards of every test pair, and its views' where a view scores every pair: what
    test_scores.csv keeps for statistics to resample (harness/results.py ``write_test_scores``)."""

    chosen: np.ndarray
    rejected: np.ndarray
    pairs: object  # the raw test split: domain and gold of each pair
    views: dict  # view name -> (chosen, rejected)


def evaluate_on_test(job: JobInputs, prepared: Prepared, fit_passes: BackbonePasses, stages: Stages,
                     out: dict) -> ScoredTestPairs:
    """The fitted RM and everything it exposes (views, routing, MoE load) on the test pairs, with the one rule of
    harness/evaluate.py; ``out``: ``accuracy``, ``params`` (active per scored response, SPEC §6), ``cost`` and the
    views' blocks."""
    arch, test, batch_size, timing = job.arch, prepared.test, job.eval.batch_size, out["timing_s"]
    t0 = time.perf_counter()
    stages.next(f"reward model: evaluating on {len(test)} test pairs")
    with BackbonePasses() as score_passes:
        r_chosen, r_rejected = arch.score(test.chosen, batch_size), arch.score(test.rejected, batch_size)
    timing["score_per_1k"] = (time.perf_counter() - t0) / (2 * len(test)) * 1000
    pairs = prepared.data.splits["test"]
    out["accuracy"] = split_accuracy(r_chosen.numpy(), r_rejected.numpy(), pairs)
    # Active parameters per scored response, measured on the test responses where they depend on them.
    out["params"] = {**arch.param_counts(), **active_per_response(arch.active_params, test, batch_size)}
    out["cost"] = cost_block(fit_passes, score_passes, 2 * len(test), len(prepared.train) + len(prepared.val),
                             arch.cost())
    view_scores: dict = {}
    out.update(evaluate_architecture(arch, prepared.val, test, pairs, prepared.data.domains, batch_size,
                                     view_scores))
    return ScoredTestPairs(chosen=r_chosen.numpy(), rejected=r_rejected.numpy(), pairs=pairs, views=view_scores)


def evaluate_length_bias(job: JobInputs, prepared: Prepared, out: dict) -> None:
    """The fitted RM's and its views' style-controlled accuracy on the world's verbosity pairs (harness/length_bias.py;
    ``out["length_bias"]``), as many pairs as the test split has; nothing when the data has no world. Best-of-N adds
    ``bon.length_corr`` on its own samples (harness/optimize/study.py)."""
    out.update(length_bias_blocks(job.arch, prepared.backbone, prepared.data, job.seed, job.eval.batch_size))


def evaluate_on_benchmarks(job: JobInputs, prepared: Prepared, job_dir: Path, out: dict) -> None:
    """The fitted RM on the benchmarks the job names (``out["benchmarks"]``, harness/rewardbench.py) and on its
    lm-eval tasks (``out["lm_eval_rm"]``, harness/lmeval.py); nothing when it names none."""
    arch, backbone, batch_size = job.arch, prepared.backbone, job.eval.batch_size
    if job.eval.benchmarks:
        t0 = time.perf_counter()
        scorer = RewardScorer(arch, backbone.tokenizer, prompt_template_of(backbone), backbone.max_length, batch_size)
        out["benchmarks"] = evaluate_benchmarks(scorer, job.eval.benchmarks)
        out["timing_s"]["benchmarks"] = time.perf_counter() - t0
    if job.eval.lm_eval_tasks:
        from .lmeval import rm_lm_eval

        out["lm_eval_rm"] = rm_lm_eval(arch, backbone, job.eval.lm_eval_tasks, prepared.data.splits["test"], job_dir,
                                       job.eval.lm_eval_limit, batch_size, job.seed)


def export_model(job: JobInputs, prepared: Prepared, job_dir: Path, out: dict) -> None:
    """The fitted RM as a folder that harness/export.py loads back and harness/serve.py serves (``out["export"]``)."""
    settings = job.export
    out["export"] = export_reward_model(job.arch, prepared.backbone, settings.arch_cfg, job_dir / EXPORT_DIR,
                                        domains=prepared.data.domains, seed=job.seed, batch_size=job.eval.batch_size,
                                        backbone_cfg=settings.backbone_cfg, dense=settings.dense)
    out["timing_s"]["export"] = out["export"]["seconds"]


def optimization_studies(job: JobInputs, prepared: Prepared, metric_logger: MetricLogger, stages: Stages,
                         out: dict) -> list[dict]:
    """The policy optimised against the fitted RM, one study after the other (harness/optimize/study.py); ``out``:
    each study's block. Returns the curves' rows (curves.csv)."""
    from .optimize.study import run_studies

    t0 = time.perf_counter()
    results, curves = run_studies(job.studies, arch=job.arch, data=prepared.data, backbone=prepared.backbone,
                                  policy_cfg=job.policy, cache=prepared.cache, seed=job.seed,
                                  eval_batch_size=job.eval.batch_size, metric_logger=metric_logger, stages=stages,
                                  compute=job.compute)
    metric_logger.curve_rows(curves)
    out.update(results)
    out["timing_s"]["optimize"] = time.perf_counter() - t0
    return curves
