"""Serving throughput of ``python -m harness.serve`` (issue 29, item 4): requests/s and p50 / p99 latency of
OpenRLHF-style reward requests over real HTTP on 127.0.0.1, one request per model call (as the server did before
dynamic batching) against dynamic batching, side by side in one run.

    python benchmarks/serve_throughput.py [PATH] [--requests 400] [--queries 8] [--clients 32] [--reps 3]
        [--waits 2] [--batch-sizes B,...] [--today DIR] [hydra overrides of the data...]

PATH is an exported RM (default: the newest ``results/runs/*/reward_model``; ``python -m harness threads=1``
writes one). Each configuration is its own ``python -m harness.serve`` process, all started before timing:

- ``per request``: ``--batch-size <queries> --max-wait-ms 0``: a model call holds exactly one request (the next
  one does not fit), in one forward of its queries, which is what the server computed before batching;
- ``batched B/W ms``: ``--batch-size B --max-wait-ms W`` for each B of ``--batch-sizes`` (default: the job's
  eval.batch_size) and each W of ``--waits``;
- ``today DIR`` (with ``--today``): the server of another checkout (e.g. /work/main before this change), started
  with its defaults in this process's environment, as a user starts it: its OpenMP threads spin while idle
  unless OMP_WAIT_POLICY says otherwise (harness.serve now sets PASSIVE itself);
- ``today DIR, PASSIVE``: the same server with the wait policy of this one, which separates what the wait policy
  gains from what batching gains.

The queries are the configured data's test pairs (the default job's world unless overridden), chosen and rejected
in turn, sent as OpenRLHF sends them: a left pad, the prompt, the response and an end-of-sequence token, with the
prompts. ``--clients`` threads of this process (``harness.serve.load_test``) each keep one connection and send
their next request when the last is answered. After an untimed warm-up per server, ``--reps`` rounds run every
configuration in turn (the order rotated each round) on the same ``--requests`` bodies. Every answer is checked:
status 200 and each request's rewards equal to the RM scoring that request alone in this process (largest
difference printed). The CPU may be shared: read the ratios, whose configurations ran in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

# The environment a user's server would start in: harness.serve, imported below, sets OMP_WAIT_POLICY in it.
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from harness.cache import ArtifactCache  # noqa: E402
from harness.export import load_reward_model  # noqa: E402
from harness.serve import load_test  # noqa: E402
from harness.threads import WAIT_POLICY  # noqa: E402

STARTUP_S = 180  # a server imports torch and transformers on a shared 2-core machine
# Largest |served - alone| reward accepted: fp32 rounding of forwards of other shapes, far below any reward gap.
TOLERANCE = 1e-5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", help="exported RM (default: the newest results/runs/*/reward_model)")
    p.add_argument("--requests", type=int, default=400, help="timed requests per configuration and round")
    p.add_argument("--queries", type=int, default=8, help="queries per request")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--reps", type=int, default=3, help="timed rounds over all configurations")
    p.add_argument("--warmup", type=int, default=64, help="untimed requests per server before the rounds")
    p.add_argument("--waits", default="2", help="comma-separated --max-wait-ms values of the batched servers")
    p.add_argument("--batch-sizes", default="", help="comma-separated --batch-size values of the batched servers "
                   "(default: the job's eval.batch_size)")
    p.add_argument("--today", help="a checkout whose harness.serve also runs, with its defaults (e.g. /work/main)")
    p.add_argument("--port", type=int, default=5600, help="first port; configuration k listens on port + k")
    p.add_argument("overrides", nargs="*", help="hydra overrides of the job config that says which data to read")
    return p.parse_args()


def newest_export() -> Path:
    found = sorted((ROOT / "results" / "runs").glob("*/reward_model/rmharness.json"))
    if not found:
        raise SystemExit("no results/runs/*/reward_model: run `python -m harness threads=1` or pass PATH")
    return found[-1].parent


def request_bodies(overrides: list[str], scorer, n_requests: int, queries: int) -> tuple[list[dict], list[tuple]]:
    """The request bodies and, per request, its (prompts, responses)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    data = instantiate(cfg.data, _convert_="all").prepare(ArtifactCache(cfg.cache_dir), int(cfg.seed))
    test = data.splits["test"][:]
    pairs = [(p, side[i]) for i, p in enumerate(test["prompt"]) for side in (test["chosen"], test["rejected"])]
    tok = scorer.tokenizer
    bodies, texts = [], []
    for k in range(n_requests):
        chunk = [pairs[(k * queries + j) % len(pairs)] for j in range(queries)]
        bodies.append({"query": [f"{tok.pad_token}{p} {r}{tok.eos_token}" for p, r in chunk],
                       "prompts": [p for p, _ in chunk], "labels": [""] * queries})
        texts.append(([p for p, _ in chunk], [r for _, r in chunk]))
    return bodies, texts


def server_wait_policy() -> str:
    """OpenMP's wait policy of this checkout's servers and of ``today DIR, PASSIVE``: harness.serve's own unless
    the environment sets one."""
    return os.environ.get("OMP_WAIT_POLICY", WAIT_POLICY)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@contextmanager
def server(checkout: Path, path: Path, port: int, flags: list[str], wait_policy: str | None):
    """``python -m harness.serve`` of ``checkout`` on ``port`` with OMP_WAIT_POLICY ``wait_policy`` (None: unset,
    OpenMP's default): yields its /get_reward URL once /health answers."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(checkout)
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    proc = subprocess.Popen([sys.executable, "-m", "harness.serve", str(path), "--host", "127.0.0.1", "--port",
                             str(port), *flags], cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server {flags} exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                get_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"server {flags} did not answer /health in {STARTUP_S} s") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/get_reward"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def largest_error(result, expected: list[list[float]]) -> float:
    """Largest |served - alone| over all rewards; exits on any request not answered 200 with one per query."""
    bad = [i for i, (s, a) in enumerate(zip(result.statuses, result.answers, strict=True))
           if s != 200 or len(a["rewards"]) != len(expected[i])]
    if bad:
        raise SystemExit(f"{len(bad)} requests not answered in full, e.g. #{bad[0]}: {result.statuses[bad[0]]} "
                         f"{str(result.answers[bad[0]])[:300]}")
    return max(abs(x - y) for a, e in zip(result.answers, expected, strict=True)
               for x, y in zip(a["rewards"], e, strict=True))


def main() -> None:
    args = parse_args()
    path = Path(args.path) if args.path else newest_export()
    scorer = load_reward_model(path)
    bodies, texts = request_bodies(args.overrides, scorer, args.requests, args.queries)
    expected = [scorer.score(p, r).tolist() for p, r in texts]
    policy = server_wait_policy()
    # name: (checkout, flags, OMP_WAIT_POLICY)
    configs = {"per request": (ROOT, ["--batch-size", str(args.queries), "--max-wait-ms", "0"], policy)}
    for size in [b.strip() for b in args.batch_sizes.split(",") if b.strip()] or [str(scorer.batch_size)]:
        for wait in (w.strip() for w in args.waits.split(",") if w.strip()):
            configs[f"batched {size}/{wait} ms"] = (ROOT, ["--batch-size", size, "--max-wait-ms", wait], policy)
    if args.today:
        today = Path(args.today).resolve()
        configs[f"today {args.today}"] = (today, [], USER_WAIT_POLICY)
        configs[f"today {args.today}, {policy}"] = (today, [], policy)
    names = list(configs)
    today_policy = f" (today {args.today}: {USER_WAIT_POLICY or 'unset'})" if args.today else ""
    width = max(len(name) for name in names)
    print(f"RM {path} ({scorer.info['arch']['_target_'].rsplit('.', 1)[-1]}, batch size {scorer.batch_size}) | "
          f"{args.requests} requests of {args.queries} queries from {args.clients} clients, {args.reps} rounds | "
          f"servers: torch's default threads, OMP_WAIT_POLICY {policy}"
          f"{today_policy} | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    results: dict[str, list] = {name: [] for name in names}
    calls: dict[str, list[int]] = {name: [] for name in names}  # model calls per round (harness.serve's /health)
    busy: dict[str, list[float]] = {name: [] for name in names}  # share of the round's wall time in the model
    with ExitStack() as stack:
        urls = {name: stack.enter_context(server(checkout, path, args.port + k, flags, wait_policy))
                for k, (name, (checkout, flags, wait_policy)) in enumerate(configs.items())}
        for name in names:
            load_test(urls[name], bodies[: args.warmup], args.clients)
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                before = get_json(urls[name].replace("/get_reward", "/health"))
                result = load_test(urls[name], bodies, args.clients)
                after = get_json(urls[name].replace("/get_reward", "/health"))
                error = largest_error(result, expected)
                results[name].append(result)
                if "batches" in before:
                    calls[name].append(after["batches"] - before["batches"])
                    busy[name].append((after["model_seconds"] - before["model_seconds"]) / result.seconds)
                print(f"round {rep + 1} {name:<{width}} {result.requests_per_s:7.1f} req/s  p50 "
                      f"{result.latency_percentile(50) * 1000:6.1f} ms  p99 {result.latency_percentile(99) * 1000:6.1f}"
                      f" ms  largest |served - alone| {error:.1e}", flush=True)
                if error > TOLERANCE:
                    raise SystemExit(f"{name}: a reward differs from scoring its request alone by {error:.2e}")

    # The ratio's baseline: the pre-change server as a user starts it when there is one, else one request per call.
    baseline = f"today {args.today}" if args.today else "per request"
    print(f"\n{'configuration':<{width}} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'queries/call':>12} "
          f"{'model busy':>10}  req/s vs {baseline}")
    base = [r.requests_per_s for r in results[baseline]]
    for name in names:
        rps = [r.requests_per_s for r in results[name]]
        per_call = (f"{args.requests * args.queries * len(calls[name]) / sum(calls[name]):>12.1f}"
                    if calls[name] else f"{'-':>12}")
        model_busy = f"{statistics.median(busy[name]):>10.0%}" if busy[name] else f"{'-':>10}"
        paired = [a / b for a, b in zip(rps, base, strict=True)]
        print(f"{name:<{width}} {statistics.median(rps):>7.1f} "
              f"{statistics.median(r.latency_percentile(50) for r in results[name]) * 1000:>7.1f} "
              f"{statistics.median(r.latency_percentile(99) for r in results[name]) * 1000:>7.1f} {per_call} "
              f"{model_busy}  {statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})")
    print("medians over rounds; model busy: the share of a round's wall time its server spent in model calls; the "
          "last column pairs each round with the baseline's (min-max)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
