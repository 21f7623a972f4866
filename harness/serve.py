"""``python -m harness.serve PATH [--host 127.0.0.1] [--port 5000] [--batch-size N] [--max-wait-ms 2]
[--max-queries 4096] [--max-query-chars 200000] [--device auto] [--precision fp32]``: an exported reward model
(``<job_dir>/reward_model/``) behind HTTP, speaking OpenRLHF's remote reward-model protocol (FastAPI + uvicorn).

``POST /get_reward`` with JSON ``{"query": [...], "prompts": [...]}`` answers ``{"rewards": [...], "scores":
[...]}`` (one float per query; ``scores`` repeats ``rewards`` for OpenRLHF versions that read that key). As in
OpenRLHF (``openrlhf/utils/remote_rm_utils.py``: ``{"query": queries, "prompts": prompts, "labels": labels}``;
``openrlhf/cli/serve_rm.py``), a query is the decoded policy sequence, i.e. the prompt text followed by the
response, special tokens included:

- with ``prompts`` (what OpenRLHF sends), query i must start with prompts[i]; the rest is the response. Leading
  pad tokens of the query, trailing pad / end-of-sequence tokens of the response and the whitespace where prompt
  and response meet are removed (the RM was trained without them). The RM then reads (prompt, response) through
  its own text template, so the prompts should be what the RM was trained on (not chat-templated markup);
- without ``prompts``, a query must already be in the RM's own text format (its ``prompt_template``, e.g.
  ``"{prompt} => {response}"``) and is split at the template's first separator.

``labels`` and any other fields are accepted and ignored.

Dynamic batching: OpenRLHF and verl call a remote RM from many rollout workers at once, and each model call pays a
fixed cost (the tokenizer call, the modules' Python, a GPU's kernel launches) that a merged batch pays once.
Requests wait in one queue on the event loop; one worker takes the oldest, waits at most ``--max-wait-ms`` after
its arrival for more, and scores the queries of all the requests waiting (up to ``--batch-size`` queries, whole
requests; a request larger than that goes alone, in forwards of ``--batch-size``) in one call of the model, on one
thread: some architectures switch adapters or keep routing state on their modules, so two forwards must never run
at once. Each request gets its own rewards, in order: the RM scores a merged batch as it scores any list, tokenized
per sequence and right-padded in length order, so a request's rewards are the ones it gets alone (up to fp32
rounding of differently shaped matmuls). A batch that fails is scored again request by request, so only the request
that fails gets the 500.

Limits: a request of more than ``--max-queries`` queries (or prompts), or a query or prompt of more than
``--max-query-chars`` characters, gets a 413 naming the limit and the value, before any work. A malformed request
gets a 422 with a message saying what is wrong; neither stops the server. ``GET /health`` says which model is
loaded, the batching settings and limits, and how many batches and queries were scored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from .threads import WAIT_POLICY  # light: os and pathlib only

# Idle OpenMP threads sleep instead of spinning (harness/threads.py), as in `python -m harness`; read once, when
# torch loads, so before the imports below. On a CPU shared with other work a spinning thread takes the core that
# the event loop and the model thread's Python need.
os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)

from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from .export import RewardScorer, load_reward_model  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_PORT = 5000  # OpenRLHF's serve_rm default
UNPROCESSABLE = 422
TOO_LARGE = 413
# How long the oldest waiting request waits for others to share its forward. Under load requests pile up while
# the model runs and the wait never applies; alone, a request is answered this much later.
DEFAULT_MAX_WAIT_MS = 2.0
# Queries per request: OpenRLHF sends a rollout micro-batch (tens to a few hundred sequences) per request; 4,096
# leaves room for a whole rollout batch and bounds one request's scoring (20,000 queries: 4.3 s on the tiny RM,
# all of it holding up every request queued behind).
DEFAULT_MAX_QUERIES = 4096
# Characters per query or prompt: OpenRLHF decodes sequences with their special tokens, so a left-padded row of
# a 2,048 + 2,048-token rollout carries up to ~4,000 pad tokens (SmolLM2's "<|endoftext|>": 13 characters each,
# 53k characters) besides its text; the RM itself reads at most max_length * 32 characters of a prompt and of a
# response (data/schema.py MAX_CHARS_PER_TOKEN). A 5 MB string is neither.
DEFAULT_MAX_QUERY_CHARS = 200_000


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenRLHF also sends `labels`; ignored

    query: list[str]
    prompts: list[str] | None = None


class RequestTooLarge(ValueError):
    """A request over one of the server's limits (HTTP 413)."""


def check_limits(request: RewardRequest, max_queries: int, max_query_chars: int) -> None:
    """Raise ``RequestTooLarge`` naming the limit and the value when ``request`` exceeds one."""
    for name, texts in (("query", request.query), ("prompts", request.prompts or [])):
        if len(texts) > max_queries:
            raise RequestTooLarge(f"'{name}' has {len(texts)} entries; this server takes at most {max_queries} "
                                  f"per request (--max-queries)")
    for name, texts in (("query", request.query), ("prompts", request.prompts or [])):
        for i, text in enumerate(texts):
            if len(text) > max_query_chars:
                raise RequestTooLarge(f"{name}[{i}] has {len(text)} characters; this server takes at most "
                                      f"{max_query_chars} per query (--max-query-chars)")


def strip_trailing(text: str, tokens: list[str]) -> str:
    """``text`` without any run of ``tokens`` (pad, end-of-sequence) at its end, nor the whitespace before them.
    Index arithmetic, no copy per token removed: a query may end in thousands of pads (40,000 five-character pads:
    18 ms, against 88 ms copying the rest of the text at each one)."""
    end, changed = len(text), True
    while changed:
        changed = False
        for token in tokens:
            stripped = whitespace_start(text, end)
            if text.endswith(token, 0, stripped):
                end, changed = whitespace_start(text, stripped - len(token)), True
    return text[:end]


def whitespace_start(text: str, end: int) -> int:
    """Where the whitespace that ends ``text[:end]`` starts (``len(text[:end].rstrip())``, without the copy)."""
    while end and text[end - 1].isspace():
        end -= 1
    return end


def strip_leading(text: str, tokens: list[str]) -> str:
    start, changed = 0, True
    while changed:
        changed = False
        for token in tokens:
            if text.startswith(token, start):
                start, changed = start + len(token), True
    return text[start:]


def split_queries(scorer: RewardScorer, queries: list[str], prompts: list[str] | None) -> tuple[list, list]:
    """(prompts, responses) of a request (module docstring); a ``ValueError`` says which query is wrong."""
    tok = scorer.tokenizer
    pads = [t for t in (tok.pad_token,) if t]
    ends = [t for t in dict.fromkeys((tok.eos_token, tok.pad_token)) if t]
    if prompts is not None:
        if len(prompts) != len(queries):
            raise ValueError(f"'prompts' has {len(prompts)} entries but 'query' has {len(queries)}")
        out_p, out_r = [], []
        for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
            query, prompt = strip_leading(query, pads), strip_leading(prompt, pads)
            if not prompt.strip():
                raise ValueError(f"prompts[{i}] is empty")
            if not query.startswith(prompt):
                raise ValueError(f"query[{i}] does not start with prompts[{i}] (a query is the prompt followed by "
                                 f"the response): query starts {query[:60]!r}, prompt {prompt[:60]!r}")
            out_p.append(prompt.rstrip())  # the RM's template supplies the separator between the two
            out_r.append(strip_trailing(query[len(prompt):], ends).lstrip())
        return out_p, out_r
    head, sep_tail = scorer.prompt_template.split("{prompt}", 1)
    sep, tail = sep_tail.split("{response}", 1)
    out_p, out_r = [], []
    for i, query in enumerate(queries):
        text = strip_trailing(strip_leading(query, pads), ends)
        if not (text.startswith(head) and text.endswith(tail) and sep in text[len(head):]):
            raise ValueError(f"query[{i}] is not in this RM's text format {scorer.prompt_template!r} and no "
                             f"'prompts' were sent to split it: {query[:60]!r}")
        prompt, response = text[len(head): len(text) - len(tail)].split(sep, 1)
        if not prompt.strip():
            raise ValueError(f"query[{i}] has an empty prompt")
        out_p.append(prompt)
        out_r.append(response)
    return out_p, out_r


# ------------------------------------------------------------------------------------------ dynamic batching
@dataclass
class Pending:
    """One request's (prompt, response) pairs waiting for the model, and where its rewards go."""

    prompts: list[str]
    responses: list[str]
    future: asyncio.Future
    arrived: float  # event-loop clock


class RequestBatcher:
    """Merges concurrent requests into model calls (module docstring). ``score_texts(prompts, responses)`` is
    the model: it only ever runs on the batcher's one worker thread, one call at a time. ``run`` is the worker
    loop (a task on the event loop that made the batcher); ``score`` is what a request awaits."""

    def __init__(self, score_texts: Callable[[list[str], list[str]], list[float]], batch_size: int,
                 max_wait_s: float):
        self.score_texts, self.batch_size, self.max_wait_s = score_texts, batch_size, max_wait_s
        self.waiting: deque[Pending] = deque()
        self.queued = 0  # queries in `waiting`
        self.batches = 0  # model calls that succeeded
        self.scored = 0  # queries they scored
        self.model_seconds = 0.0  # wall time of those calls
        self.arrived = asyncio.Event()
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-model")

    async def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        loop = asyncio.get_running_loop()
        pending = Pending(prompts, responses, loop.create_future(), loop.time())
        self.waiting.append(pending)
        self.queued += len(prompts)
        self.arrived.set()
        return await pending.future

    async def run(self) -> None:
        """Until cancelled; then the requests still waiting are cancelled and the model thread is shut down."""
        try:
            await self.serve_batches()
        finally:
            for pending in self.waiting:
                pending.future.cancel()
            self.waiting.clear()
            self.queued = 0
            self.model_thread.shutdown(wait=True)

    async def serve_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
            deadline = self.waiting[0].arrived + self.max_wait_s
            while self.queued < self.batch_size and (left := deadline - loop.time()) > 0:
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            batch = self.take()
            if batch:
                await self.score_batch(batch)

    def take(self) -> list[Pending]:
        """The oldest waiting requests, whole, up to ``batch_size`` queries (at least one request)."""
        batch, size = [], 0
        while self.waiting and (not batch or size + len(self.waiting[0].prompts) <= self.batch_size):
            pending = self.waiting.popleft()
            self.queued -= len(pending.prompts)
            if not pending.future.done():  # done already: its request was cancelled (the client went away)
                batch.append(pending)
                size += len(pending.prompts)
        return batch

    async def score_batch(self, batch: list[Pending]) -> None:
        prompts = [p for pending in batch for p in pending.prompts]
        responses = [r for pending in batch for r in pending.responses]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            rewards = await loop.run_in_executor(self.model_thread, self.score_texts, prompts, responses)
            if len(rewards) != len(prompts):
                raise RuntimeError(f"the model gave {len(rewards)} rewards for {len(prompts)} queries")
        except Exception as e:
            if len(batch) > 1:  # only the request that fails should fail
                for pending in batch:
                    await self.score_batch([pending])
            elif not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        self.batches += 1
        self.scored += len(prompts)
        self.model_seconds += loop.time() - started
        start = 0
        for pending in batch:
            end = start + len(pending.prompts)
            if not pending.future.done():
                pending.future.set_result(rewards[start:end])
            start = end


def make_app(scorer: RewardScorer, name: str = "", batch_size: int | None = None,
             max_wait_ms: float = DEFAULT_MAX_WAIT_MS, max_queries: int = DEFAULT_MAX_QUERIES,
             max_query_chars: int = DEFAULT_MAX_QUERY_CHARS) -> FastAPI:
    """The server's app; ``batch_size`` defaults to the scorer's (the job's eval.batch_size)."""
    batch_size = int(scorer.batch_size if batch_size is None else batch_size)
    for flag, value in (("--batch-size", batch_size), ("--max-queries", max_queries),
                        ("--max-query-chars", max_query_chars)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms must be at least 0, got {max_wait_ms}")

    def score_texts(prompts: list[str], responses: list[str]) -> list[float]:
        return scorer.score(prompts, responses, batch_size).tolist()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # One batcher per run of the server, made on its event loop (its event and futures belong to that loop).
        app.state.batcher = RequestBatcher(score_texts, batch_size, max_wait_ms / 1000)
        worker = asyncio.create_task(app.state.batcher.run(), name="reward-model batching")
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    app = FastAPI(title="rmharness reward model", description=__doc__, lifespan=lifespan)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("scoring failed")
        return JSONResponse(status_code=500, content={"detail": f"{type(exc).__name__}: {exc}"})

    @app.get("/health")
    async def health(http: Request) -> dict:
        batcher = http.app.state.batcher
        return {"status": "ok", "model": name, "arch": scorer.info.get("arch", {}).get("_target_"),
                "prompt_template": scorer.prompt_template, "batch_size": batch_size, "max_wait_ms": max_wait_ms,
                "max_queries": max_queries, "max_query_chars": max_query_chars,
                "batches": batcher.batches, "queries_scored": batcher.scored,
                "model_seconds": round(batcher.model_seconds, 3)}

    @app.post("/get_reward")
    async def get_reward(request: RewardRequest, http: Request) -> dict:
        try:
            check_limits(request, max_queries, max_query_chars)
            prompts, responses = split_queries(scorer, request.query, request.prompts)
        except RequestTooLarge as e:
            raise HTTPException(status_code=TOO_LARGE, detail=str(e)) from None
        except ValueError as e:
            raise HTTPException(status_code=UNPROCESSABLE, detail=str(e)) from None
        rewards = await http.app.state.batcher.score(prompts, responses) if prompts else []
        return {"rewards": rewards, "scores": rewards}

    return app


# ----------------------------------------------------------------------------------------------- load client
@dataclass
class LoadResult:
    """What ``load_test`` saw: per request (in the order of the bodies) its HTTP status, decoded answer and
    seconds from sending to the last byte of the answer; the wall time of the whole run."""

    statuses: list[int]
    answers: list
    latencies: list[float]
    seconds: float

    @property
    def requests_per_s(self) -> float:
        return len(self.statuses) / self.seconds

    def latency_percentile(self, q: int) -> float:
        """The ``q``-th percentile (1-99) of the latencies, in seconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


def load_test(url: str, bodies: list[dict], clients: int, timeout_s: float = 60.0) -> LoadResult:
    """POST every body to ``url`` (``http://host:port/get_reward``) from ``clients`` threads at once, each over
    one kept-alive HTTP/1.1 connection and sending its next request as soon as the last is answered (the way
    rollout workers call a remote RM). Bodies are encoded before the clock starts."""
    parts = urlsplit(url)
    payloads = [json.dumps(body).encode() for body in bodies]
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(payloads)):
        todo.put(i)
    statuses, answers, latencies = [0] * len(bodies), [None] * len(bodies), [0.0] * len(bodies)
    errors: list[BaseException] = []

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                conn.request("POST", parts.path, body=payloads[i], headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                latencies[i] = time.perf_counter() - t0
                statuses[i], answers[i] = response.status, json.loads(data)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"load-client-{k}") for k in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return LoadResult(statuses, answers, latencies, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="an exported reward model: <job_dir>/reward_model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="most queries per model call: concurrent requests are merged up to this many "
                             "(whole requests; a larger one goes alone, in forwards of this size) "
                             "(default: the job's eval.batch_size)")
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help="how long the oldest waiting request waits for others to fill a batch "
                             f"(default {DEFAULT_MAX_WAIT_MS:g}; 0: score what is waiting at once)")
    parser.add_argument("--max-queries", type=int, default=DEFAULT_MAX_QUERIES,
                        help=f"most queries (and prompts) per request; more gets a 413 (default {DEFAULT_MAX_QUERIES})")
    parser.add_argument("--max-query-chars", type=int, default=DEFAULT_MAX_QUERY_CHARS,
                        help="most characters per query or prompt, pad tokens included; more gets a 413 "
                             f"(default {DEFAULT_MAX_QUERY_CHARS})")
    parser.add_argument("--device", default="auto",
                        help="auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N | mps (default auto)")
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 (default fp32)")
    args = parser.parse_args(argv)
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    try:
        scorer = load_reward_model(args.path, args.batch_size, args.device, args.precision)
    except ValueError as e:  # a device that is not there, an unknown precision: the flag is named
        parser.error(str(e).replace("device=", "--device ").replace("precision=", "--precision "))
    try:
        app = make_app(scorer, str(args.path), args.batch_size, args.max_wait_ms, args.max_queries,
                       args.max_query_chars)
    except ValueError as e:  # the message names the flag
        parser.error(str(e))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
