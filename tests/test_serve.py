"""`python -m harness.serve`: OpenRLHF's remote reward protocol over real HTTP on 127.0.0.1 (a server thread, and
the command line in a subprocess); malformed requests get a 4xx with a message and the server keeps answering;
concurrent requests are merged into model calls (the batcher on its own, and over HTTP) and each gets the rewards
of its own queries; requests over the limits get a 413 naming the limit; a load test (slow set)."""

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import CONF_DIR, SERVER_STARTUP_S, serving
from conftest import post_json as post

from harness import serve
from harness.export import load_reward_model

ROOT = Path(CONF_DIR).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(exported):
    """(base URL, scorer) of an exported single RM served by uvicorn in a thread, batch size 2."""
    _, _, out, _ = exported("single")
    scorer = load_reward_model(out, batch_size=2)
    with serving(scorer, "single") as url:
        yield url, scorer


def test_openrlhf_request_with_prompts(served, tiny):
    url, scorer = served
    ds = tiny.data.splits["test"]
    prompts, responses = ds["prompt"][:5], ds["chosen"][:5]
    tok = scorer.tokenizer
    # As OpenRLHF sends it: decoded sequences with special tokens (left pads, a trailing EOS) and the prompts.
    queries = [f"{tok.pad_token}{p} {r} {tok.eos_token}" for p, r in zip(prompts, responses, strict=True)]
    status, body = post(f"{url}/get_reward", {"query": queries, "prompts": [p + " " for p in prompts],
                                             "labels": [""] * 5})
    assert status == 200, body
    expected = scorer.score(prompts, responses).tolist()  # 5 queries in batches of 2: same numbers
    assert body["rewards"] == pytest.approx(expected, abs=1e-6) and body["scores"] == body["rewards"]


def test_query_in_the_rms_own_text_format(served, tiny):
    url, scorer = served
    ds = tiny.data.splits["test"]
    queries = [scorer.join(p, r) for p, r in zip(ds["prompt"][:3], ds["rejected"][:3], strict=True)]
    status, body = post(f"{url}/get_reward", {"query": queries})
    assert status == 200, body
    assert body["rewards"] == pytest.approx(scorer.score(ds["prompt"][:3], ds["rejected"][:3]).tolist(), abs=1e-6)
    assert post(f"{url}/get_reward", {"query": []}) == (200, {"rewards": [], "scores": []})


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 422, "JSON"),
    ({"prompts": ["a"]}, 422, "query"),
    ({"query": "one string"}, 422, "query"),
    ({"query": [1, 2]}, 422, "query"),
    ({"query": ["a => b", "c => d"], "prompts": ["a"]}, 422, "'prompts' has 1 entries but 'query' has 2"),
    ({"query": ["something else"], "prompts": ["a prompt"]}, 422, "query[0] does not start with prompts[0]"),
    ({"query": ["no separator here"]}, 422, "not in this RM's text format"),
    ({"query": ["x"], "prompts": [""]}, 422, "prompts[0] is empty"),
])
def test_malformed_requests_get_a_4xx_with_a_message(served, body, status, message):
    url, _ = served
    got, answer = post(f"{url}/get_reward", body)
    assert got == status and message in json.dumps(answer["detail"]), answer
    assert post(f"{url}/get_reward", {"query": ["chat => ok"]})[0] == 200  # still serving


@contextlib.contextmanager
def command_line_server(path, *flags):
    """``python -m harness.serve path --port <free> *flags`` in a subprocess: yields (base URL, /health answer)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.serve", str(path), "--host", "127.0.0.1", "--port",
                             str(port), *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, health = time.time() + SERVER_STARTUP_S, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    health = json.loads(r.read())
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert health and health["status"] == "ok", proc.stderr.read().decode()[-2000:] if proc.poll() else health
        yield f"http://127.0.0.1:{port}", health
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_command_line_server(exported, tiny):
    _, _, out, _ = exported("single")
    ds = tiny.data.splits["test"]
    prompts, responses = ds["prompt"][:4], ds["chosen"][:4]
    queries = [p + " " + r for p, r in zip(prompts, responses, strict=True)]
    with command_line_server(out, "--max-queries", "4", "--max-query-chars", "300", "--max-wait-ms", "5",
                             "--batch-size", "32") as (url, health):
        assert health["arch"] == "harness.archs.single.SingleRM"
        assert (health["batch_size"], health["max_wait_ms"], health["max_queries"], health["max_query_chars"]) == (
            32, 5, 4, 300)
        status, body = post(f"{url}/get_reward", {"query": queries, "prompts": prompts})
        assert status == 200
        scorer = load_reward_model(out)
        assert body["rewards"] == pytest.approx(scorer.score(prompts, responses).tolist(), abs=1e-6)
        # One over each flag's limit: a 413 naming the flag, the limit and the value.
        status, body = post(f"{url}/get_reward", {"query": queries + queries[:1], "prompts": prompts + prompts[:1]})
        assert status == 413 and body["detail"] == ("'query' has 5 entries; this server takes at most 4 per request "
                                                    "(--max-queries)")
        status, body = post(f"{url}/get_reward", {"query": [prompts[0] + " " + "x" * 301], "prompts": prompts[:1]})
        assert status == 413 and body["detail"].startswith(f"query[0] has {len(prompts[0]) + 302} characters; this "
                                                           "server takes at most 300 per query (--max-query-chars)")


def test_help_documents_batching_and_limits(capsys):
    with pytest.raises(SystemExit):
        serve.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--batch-size", "--max-wait-ms", "--max-queries", "--max-query-chars"):
        assert flag in text
    assert f"default {serve.DEFAULT_MAX_QUERIES}" in text and f"default {serve.DEFAULT_MAX_QUERY_CHARS}" in text


@pytest.mark.parametrize("flag, kwargs", [("--batch-size", {"batch_size": -1}), ("--max-queries", {"max_queries": 0}),
                                          ("--max-query-chars", {"max_query_chars": 0}),
                                          ("--max-wait-ms", {"max_wait_ms": -1})])
def test_limits_below_their_minimum_are_refused(served, flag, kwargs):
    _, scorer = served
    with pytest.raises(ValueError, match=flag):
        serve.make_app(scorer, **kwargs)


# ------------------------------------------------------------------------------------------ limits (413)
def test_over_the_default_limits_a_413_names_the_limit_and_the_value(served):
    url, _ = served
    n = serve.DEFAULT_MAX_QUERIES + 1
    status, body = post(f"{url}/get_reward", {"query": ["a => b"] * n})
    assert status == 413
    assert body["detail"] == (f"'query' has {n} entries; this server takes at most {serve.DEFAULT_MAX_QUERIES} per "
                              "request (--max-queries)")
    status, body = post(f"{url}/get_reward", {"query": ["a => b"], "prompts": ["a"] * n})
    assert status == 413 and body["detail"].startswith(f"'prompts' has {n} entries")
    long = "a => " + "b" * serve.DEFAULT_MAX_QUERY_CHARS  # a 5 MB string was accepted before the limits
    status, body = post(f"{url}/get_reward", {"query": ["a => b", long]})
    assert status == 413
    assert body["detail"] == (f"query[1] has {len(long)} characters; this server takes at most "
                              f"{serve.DEFAULT_MAX_QUERY_CHARS} per query (--max-query-chars)")
    status, body = post(f"{url}/get_reward", {"query": ["a => b"], "prompts": [long]})
    assert status == 413 and body["detail"].startswith(f"prompts[0] has {len(long)} characters")
    at_limit = "a => " + "b" * (serve.DEFAULT_MAX_QUERY_CHARS - 5)
    assert post(f"{url}/get_reward", {"query": [at_limit]})[0] == 200  # at the limit: scored


def test_thousands_of_pad_tokens_are_stripped(served, tiny):
    """OpenRLHF's queries carry their pads: a query of ~20,000 pads and its prompt with 3 read as the bare pair."""
    url, scorer = served
    ds = tiny.data.splits["test"]
    prompt, response = ds["prompt"][0], ds["chosen"][0]
    tok = scorer.tokenizer
    pads = serve.DEFAULT_MAX_QUERY_CHARS // (4 * len(tok.pad_token))  # each side: the query is half the limit
    query = tok.pad_token * pads + f"{prompt} {response}" + f" {tok.eos_token}" * 3 + tok.pad_token * pads
    assert serve.split_queries(scorer, [query], [tok.pad_token * 3 + prompt]) == ([prompt], [response])
    status, body = post(f"{url}/get_reward", {"query": [query], "prompts": [prompt]})
    assert status == 200 and body["rewards"] == pytest.approx(scorer.score([prompt], [response]).tolist(), abs=1e-6)


# ------------------------------------------------------------------------------------------ dynamic batching
def run_batcher(score_texts, requests: list[tuple[list[str], list[str]]], batch_size: int, max_wait_s: float,
                first_alone_s: float = 0.0):
    """The rewards (or exception) of each request, sent to a RequestBatcher on a fresh event loop: all at once,
    or the first alone and the rest ``first_alone_s`` later."""

    async def main():
        batcher = serve.RequestBatcher(score_texts, batch_size, max_wait_s)
        worker = asyncio.create_task(batcher.run())
        try:
            first = asyncio.ensure_future(batcher.score(*requests[0]))
            if first_alone_s:
                await asyncio.sleep(first_alone_s)
            rest = await asyncio.gather(*(batcher.score(p, r) for p, r in requests[1:]), return_exceptions=True)
            return [*(await asyncio.gather(first, return_exceptions=True)), *rest]
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    return asyncio.run(main())


def test_concurrent_requests_are_merged_and_each_gets_its_own_rewards(served, tiny):
    _, scorer = served
    ds = tiny.data.splits["test"]
    sizes = [3, 5, 8, 2, 7, 9, 20, 1]
    requests, start = [], 0
    for n in sizes:  # each request its own pairs, chosen and rejected mixed, of varied lengths
        side = ds["chosen"] if len(requests) % 2 else ds["rejected"]
        requests.append((ds["prompt"][start:start + n], side[start:start + n]))
        start += n
    calls, threads = [], set()

    def score_texts(prompts, responses):
        calls.append(len(prompts))
        threads.add(threading.get_ident())
        return scorer.score(prompts, responses, 16).tolist()

    answers = run_batcher(score_texts, requests, batch_size=16, max_wait_s=0.05)
    # In arrival order, whole requests up to 16 queries: 3+5+8 | 2+7 (9 would make 18) | 9 (20 does not fit) |
    # 20 alone (larger than a batch) | 1, once the oldest has waited 50 ms for company.
    assert calls == [16, 9, 9, 20, 1]
    assert len(threads) == 1 and threading.get_ident() not in threads  # one model thread, not the caller's
    for (prompts, responses), got in zip(requests, answers, strict=True):
        # Scored alone, with its own padding: equal up to fp32 rounding of forwards of other shapes.
        assert got == pytest.approx(scorer.score(prompts, responses).tolist(), abs=1e-6)


def test_without_waiting_a_lone_request_goes_at_once_and_the_queue_is_merged_behind_it():
    calls = []

    def score_texts(prompts, responses):
        calls.append(list(prompts))
        time.sleep(0.2)  # the model is busy: the others queue up
        return [float(len(r)) for r in responses]

    requests = [([f"p{i}"], ["r" * i]) for i in range(1, 6)]
    answers = run_batcher(score_texts, requests, batch_size=64, max_wait_s=0.0, first_alone_s=0.05)
    assert calls == [["p1"], ["p2", "p3", "p4", "p5"]]
    assert answers == [[1.0], [2.0], [3.0], [4.0], [5.0]]


def test_a_failing_request_fails_alone():
    def score_texts(prompts, responses):
        if "poison" in prompts:
            raise RuntimeError("cannot score poison")
        return [float(len(r)) for r in responses]

    requests = [(["a", "b"], ["x", "yy"]), (["poison"], ["z"]), (["c"], ["www"])]
    good, bad, other = run_batcher(score_texts, requests, batch_size=64, max_wait_s=0.05)
    assert good == [1.0, 2.0] and other == [3.0]
    assert isinstance(bad, RuntimeError) and "poison" in str(bad)


def test_concurrent_http_requests_are_batched(exported, tiny, monkeypatch):
    """16 clients at once over HTTP: fewer model calls than requests, every request its own rewards."""
    _, _, out, _ = exported("single")
    scorer = load_reward_model(out)
    ds = tiny.data.splits["test"]
    bodies, expected = [], []
    for k in range(16):
        prompts, responses = ds["prompt"][4 * k: 4 * k + 4], ds["chosen"][4 * k: 4 * k + 4]
        bodies.append({"query": [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)], "prompts": prompts})
        expected.append(scorer.score(prompts, responses).tolist())
    # conftest's server builds make_app(scorer, name): here with a long wait, so the 16 requests share calls.
    monkeypatch.setattr(serve, "make_app", functools.partial(serve.make_app, max_wait_ms=2000))
    with serving(scorer, "single") as url:
        result = serve.load_test(f"{url}/get_reward", bodies, clients=16)
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            health = json.loads(r.read())
    assert result.statuses == [200] * 16
    for got, want in zip(result.answers, expected, strict=True):
        assert got["rewards"] == pytest.approx(want, abs=1e-6) and got["scores"] == got["rewards"]
    assert health["queries_scored"] == 64 and health["batches"] < 16


@pytest.mark.slow
def test_load_over_http(exported, tiny):
    """400 requests of 8 queries from 32 concurrent clients against the command-line server: every one answered
    with the rewards of its own queries scored alone; requests/s and p50 / p99 printed (pytest -s)."""
    _, _, out, _ = exported("single")
    scorer = load_reward_model(out)
    ds = tiny.data.splits["test"]
    pairs = [(p, side[i]) for i, p in enumerate(ds["prompt"]) for side in (ds["chosen"], ds["rejected"])]
    tok = scorer.tokenizer
    bodies, expected = [], []
    for k in range(400):
        chunk = [pairs[(8 * k + j) % len(pairs)] for j in range(8)]
        bodies.append({"query": [f"{tok.pad_token}{p} {r}{tok.eos_token}" for p, r in chunk],
                       "prompts": [p for p, _ in chunk], "labels": [""] * 8})
        expected.append(scorer.score([p for p, _ in chunk], [r for _, r in chunk]).tolist())
    with command_line_server(out) as (url, _):
        result = serve.load_test(f"{url}/get_reward", bodies, clients=32, timeout_s=120)
    assert result.statuses == [200] * len(bodies)
    for got, want in zip(result.answers, expected, strict=True):
        assert got["rewards"] == pytest.approx(want, abs=1e-5)
    assert result.seconds < 300  # bounded: 400 requests took 1.9 s on the 2-core CPU
    print(f"\nload test: {len(bodies)} requests of 8 queries from 32 clients in {result.seconds:.2f} s: "
          f"{result.requests_per_s:.1f} requests/s, p50 {result.latency_percentile(50) * 1000:.0f} ms, "
          f"p99 {result.latency_percentile(99) * 1000:.0f} ms")
