"""`python -m harness.serve`: OpenRLHF's remote reward protocol over real HTTP on 127.0.0.1 (a server thread, and
the command line in a subprocess); malformed requests get a 4xx with a message and the server keeps answering."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import CONF_DIR, SERVER_STARTUP_S, serving
from conftest import post_json as post

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


def test_command_line_server(exported, tiny):
    _, _, out, _ = exported("single")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.serve", str(out), "--host", "127.0.0.1", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        assert health["arch"] == "harness.archs.single.SingleRM"
        scorer = load_reward_model(out)
        ds = tiny.data.splits["test"]
        status, body = post(f"http://127.0.0.1:{port}/get_reward",
                            {"query": [p + " " + r for p, r in zip(ds["prompt"][:4], ds["chosen"][:4], strict=True)],
                             "prompts": ds["prompt"][:4]})
        assert status == 200
        assert body["rewards"] == pytest.approx(scorer.score(ds["prompt"][:4], ds["chosen"][:4]).tolist(), abs=1e-6)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
