"""Capability labelers: the shared question/parse/swap-and-agree rules, the oracle (world judges), the
OpenAI-compatible backend against a real HTTP server on 127.0.0.1, and the local-LM judge on a tiny random Llama."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.labelers import (
    TEMPLATES,
    LabelingError,
    parse_answer,
    questions,
    resolve_template,
    summarize,
    swap_and_agree,
)
from harness.labelers.local import LocalLabeler
from harness.labelers.openai import OpenAILabeler
from harness.labelers.oracle import OracleLabeler

# ----------------------------------------------------------------------------------------------- shared rules


def test_parse_rule_first_digit_wins():
    assert parse_answer("1") == 1 and parse_answer("2") == 2
    assert parse_answer("Reply 2 is better than reply 1.") == 2
    assert parse_answer("回复1更好") == 1
    assert parse_answer("I think reply 1, not 2") == 1
    assert parse_answer("neither") is None and parse_answer("") is None and parse_answer(None) is None


def test_swap_and_agree_keeps_only_consistent_answers():
    # first question shows (chosen, rejected); the swapped one (rejected, chosen)
    assert swap_and_agree(1, 2) == 1  # both say chosen
    assert swap_and_agree(2, 1) == -1  # both say rejected
    assert swap_and_agree(1, 1) == 0  # "always the first one": position bias, dropped
    assert swap_and_agree(2, 2) == 0
    assert swap_and_agree(None, 2) == 0 and swap_and_agree(1, None) == 0


def test_templates_are_the_papers_and_swap_the_replies():
    assert TEMPLATES["zh"].startswith("给定提问和两个回复，判断回复1和回复2在【{point}】方面哪个更好。")
    first, second = questions(TEMPLATES["en"], {"tone": "warmth"}, "why?", "A A", "B", "tone")
    assert "[warmth]" in first and "[Reply 1]: A A\n[Reply 2]: B" in first
    assert "[Reply 1]: B\n[Reply 2]: A A" in second
    with pytest.raises(ValueError, match="language"):
        resolve_template("fr", None)
    with pytest.raises(ValueError, match="response2"):
        resolve_template("en", "{point} {query} {response1}")


def test_summarize_counts_agreement_with_truth():
    cols = {"cap_chosen": [[1.0, 0.0, 2.0]], "cap_rejected": [[0.0, 0.0, 3.0]]}
    stats = summarize([[1, -1, 1]], cols)  # right, on a tie, wrong
    assert stats["asked"] == 3 and stats["kept"] == 3
    assert stats["agreement_with_truth"] == pytest.approx(0.5) and stats["kept_on_true_ties"] == 1


# ----------------------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def world_pairs():
    from harness.world import World, WorldConfig, preference_pairs

    def make(**overrides):
        world = World(WorldConfig(calibration_pairs=300, **overrides), seed=0)
        return world, preference_pairs(world, 60, np.random.default_rng(0))

    return make


def test_oracle_labels_align_and_agree_with_truth(world_pairs):
    world, pairs = world_pairs()
    out = OracleLabeler().label(pairs, seed=0, world=world)
    assert [len(r) for r in out["labels"]] == [len(n) for n in pairs["cap_names"]]
    assert {v for r in out["labels"] for v in r} <= {-1, 0, 1}
    s = out["stats"]
    # Kept labels agree with the true order about as often as the judges are calibrated to (small sample).
    assert 0.3 < s["kept_fraction"] < 0.95 and abs(s["agreement_with_truth"] - world.config.judge_agreement) < 0.08
    again = OracleLabeler().label(pairs, seed=0, world=world)
    assert again["labels"] == out["labels"]  # seeded
    assert OracleLabeler(seed_offset=1).label(pairs, seed=0, world=world)["labels"] != out["labels"]


def test_oracle_position_bias_is_filtered(world_pairs):
    world, pairs = world_pairs(judge_position_bias=1.0)  # the judge always answers "the first one"
    out = OracleLabeler().label(pairs, seed=0, world=world)
    assert out["stats"]["kept"] == 0 and out["stats"]["answered_first"] == 1.0


def test_oracle_needs_the_world(world_pairs):
    _, pairs = world_pairs()
    with pytest.raises(ValueError, match="synthetic"):
        OracleLabeler().label(pairs, seed=0, world=None)


# ----------------------------------------------------------------------------------------------- openai backend

SECRET = "sk-test-DO-NOT-LEAK-8f3a1c"
KEY_ENV = "RMHARNESS_TEST_LABELER_KEY"


class Server:
    """A chat-completions server on 127.0.0.1: answers by a deterministic rule (the longer reply wins), unless
    the next entry of ``script`` (or, once it is empty, ``default``) says to misbehave for this request."""

    def __init__(self):
        self.script: list[str] = []
        self.requests = 0
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.sleep_s = 0.0
        self.default = "ok"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests += 1
                    outer.auth.append(self.headers.get("Authorization"))
                    action = outer.script.pop(0) if outer.script else outer.default
                if action == "drop":
                    return  # HTTP/1.0 handler: the connection closes with no response at all
                if action == "sleep":
                    time.sleep(outer.sleep_s)
                if action in ("429", "500", "401"):
                    self.send_response(int(action))
                    if action == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                if action == "malformed":
                    payload = b'{"id": "x", "choices": []}'
                elif action == "garbage":
                    payload = b"<html>502 Bad Gateway (but sent with status 200)</html>"
                else:
                    text = body["messages"][-1]["content"]
                    r1, r2 = re.search(r"\[Reply 1\]: (.*)\n\[Reply 2\]: (.*)", text).groups()
                    content = {"ok": "Reply 1 is better." if len(r1) > len(r2) else "Reply 2 is better than 1.",
                               "sleep": "1", "first": "1", "unparseable": "They are equally good."}[action]
                    payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                                "content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make_openai(server, tmp_path, **overrides) -> OpenAILabeler:
    cfg = dict(base_url=server.url, model="judge-model", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "cache"),
               timeout_s=2.0, max_retries=3, backoff_s=0.001, max_backoff_s=0.01, max_concurrency=1)
    return OpenAILabeler(**{**cfg, **overrides})


# The chosen reply is the longer one on "detail" and the shorter one on "brevity" (the server's rule knows
# only length, so it answers right on detail and wrong on brevity: labels +1 and -1).
PAIRS = {"prompt": ["tell me", "and more"], "chosen": ["a long detailed reply", "another long answer here"],
         "rejected": ["short", "tiny"], "domain": ["x", "x"], "cap_names": [["detail", "brevity"], ["detail"]],
         "cap_chosen": [[2.0, 0.0], [3.0]], "cap_rejected": [[1.0, 1.0], [1.0]]}


def test_openai_labels_by_swap_and_agree(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    out = make_openai(server, tmp_path, max_concurrency=4).label(PAIRS, seed=0)
    assert out["labels"] == [[1, 1], [1]]  # the longer reply wins, on both points
    s = out["stats"]
    assert s["asked"] == 3 and s["kept"] == 3 and s["questions"] == 6 and server.requests == 6
    assert s["agreement_with_truth"] == pytest.approx(2 / 3)  # right on detail, wrong on brevity
    assert set(server.auth) == {f"Bearer {SECRET}"}


def test_openai_position_biased_server_keeps_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["first"] * 6
    out = make_openai(server, tmp_path, min_kept_fraction=0.0).label(PAIRS, seed=0)
    assert out["labels"] == [[0, 0], [0]] and out["stats"]["answered_first"] == 1.0
    # With the default floor the same run is an error that says why (every readable answer was "reply 1").
    with pytest.raises(LabelingError, match=r"kept 0 of 3 labels.*100% of them 'reply 1'"):
        make_openai(server, tmp_path).label(PAIRS, seed=0)


def test_openai_retries_429_and_500_then_succeeds(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["429", "500", "ok"]  # the first question needs two retries
    out = make_openai(server, tmp_path).label(PAIRS, seed=0)
    assert out["labels"] == [[1, 1], [1]]
    assert out["stats"]["retries"] == 2 and out["stats"]["requests"] == 8 and server.requests == 8
    assert out["stats"]["failed"] == 0


def test_openai_timeout_then_retry_succeeds(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.sleep_s = 1.0
    server.script = ["sleep"]  # longer than the client's timeout: the attempt fails, the retry answers
    out = make_openai(server, tmp_path, timeout_s=0.3).label(PAIRS, seed=0)
    assert out["labels"] == [[1, 1], [1]] and out["stats"]["retries"] == 1  # the timed-out attempt was retried


def test_openai_dropped_connection_is_retried(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["drop", "drop"]
    out = make_openai(server, tmp_path).label(PAIRS, seed=0)
    assert out["labels"] == [[1, 1], [1]] and out["stats"]["retries"] == 2


def test_openai_gives_up_after_max_retries(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["500"] * 3  # max_retries=2: three attempts, all fail
    out = make_openai(server, tmp_path, max_retries=2).label(PAIRS, seed=0)
    s = out["stats"]
    assert s["failed"] == 1 and s["requests"] == 3 + 5
    assert sum(v == 0 for r in out["labels"] for v in r) == 1  # exactly the slot of the failed question


def test_openai_malformed_and_unparseable_answers_are_dropped_and_counted(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["malformed", "ok", "unparseable"]  # slot 0 loses its first answer, slot 1 its first
    labeler = make_openai(server, tmp_path)
    out = labeler.label(PAIRS, seed=0)
    s = out["stats"]
    assert s["malformed"] == 1 and s["unparseable"] == 1 and s["kept"] == 1
    # A rerun asks again for the malformed body (not an answer, never cached) but not for the unparseable
    # answer (a real answer: cached).
    before = server.requests
    again = labeler.label(PAIRS, seed=0)
    assert server.requests == before + 1 and again["stats"]["cache_hits"] == 5


def test_openai_disk_cache_makes_a_rerun_free(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    first = make_openai(server, tmp_path, max_concurrency=3).label(PAIRS, seed=0)
    n = server.requests
    # A fresh labeler object (a new job) with the same model and cache_dir: zero HTTP requests.
    second = make_openai(server, tmp_path).label(PAIRS, seed=0)
    assert server.requests == n and second["stats"]["requests"] == 0 and second["stats"]["cache_hits"] == 6
    assert second["labels"] == first["labels"]
    # Another model is another cache key: asked again.
    make_openai(server, tmp_path, model="other-model").label(PAIRS, seed=0)
    assert server.requests == 2 * n


def test_openai_api_key_never_written(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["500", "malformed"]
    with caplog.at_level(logging.DEBUG):
        out = make_openai(server, tmp_path).label(PAIRS, seed=0)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written, "the answer cache should exist"
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in caplog.text and SECRET not in json.dumps(out)


def test_openai_missing_key_fails_before_any_request(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match=KEY_ENV):
        make_openai(server, tmp_path).label(PAIRS, seed=0)
    with pytest.raises(UserError, match=KEY_ENV):
        make_openai(server, tmp_path).check()  # what the job calls before training
    assert server.requests == 0


def test_openai_unauthorized_stops_without_leaking_the_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = ["401"] * 10
    with pytest.raises(LabelingError, match="401") as err:
        make_openai(server, tmp_path, max_concurrency=4).label(PAIRS, seed=0)
    assert SECRET not in str(err.value)
    # The first 401 stops the run: the questions in flight at most, not every question with its retries.
    assert server.requests <= 4


# A labelling run with no usable answer must fail and say why, not end `status: ok` with untrained experts; a dead
# server must fail in seconds, not after every question's retries (issue 21 item 1).
def test_openai_server_failing_every_request_stops_early(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.default = "500"
    labeler = make_openai(server, tmp_path, max_retries=5, max_consecutive_failures=4)
    with pytest.raises(LabelingError, match=r"4 requests in a row got no answer .*127\.0\.0\.1.*HTTP 500") as err:
        labeler.label(PAIRS, seed=0)
    # Without the stop: 6 questions x 6 attempts = 36 requests.
    assert server.requests == 4
    assert SECRET not in str(err.value)


def test_openai_unreachable_server_stops_early(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    dead = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = dead.server_address[1]
    dead.server_close()  # nothing listens on the port any more: every connection is refused

    class Closed:
        url = f"http://127.0.0.1:{port}/v1"

    labeler = make_openai(Closed, tmp_path, max_retries=5, max_consecutive_failures=3)
    with pytest.raises(LabelingError, match=rf"127\.0\.0\.1:{port}.*ConnectionRefusedError.*0 of 6 questions"):
        labeler.label(PAIRS, seed=0)


@pytest.mark.parametrize("action,reason", [("429", "HTTP 429"), ("garbage", "malformed"),
                                           ("unparseable", "3 answers named neither")])
def test_openai_run_without_usable_answers_fails_and_says_why(server, tmp_path, monkeypatch, action, reason):
    """A rate-limited server (429 never counts as dead: it is alive) and answers that carry no label end in
    the kept-fraction floor, with how many were asked, kept and dropped for which reason, and where."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.default = action
    server.script = ["ok", "ok", "ok"]  # a few usable answers: 1 label of 3 survives at most
    with pytest.raises(LabelingError) as err:
        make_openai(server, tmp_path, max_retries=1, min_kept_fraction=0.5).label(PAIRS, seed=0)
    message = str(err.value)
    assert "of 3 labels" in message and "labeler.min_kept_fraction=0.5" in message and reason in message
    assert server.url in message and SECRET not in message


def test_openai_cache_key_includes_the_server(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    make_openai(server, tmp_path).label(PAIRS, seed=0)
    other = Server()  # the same model name on another server is another judge: its answers are asked for
    try:
        make_openai(other, tmp_path).label(PAIRS, seed=0)
        assert other.requests == 6
    finally:
        other.close()


def test_openai_unwritable_answer_cache_still_labels(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # the cache dir would have to be created below a file: it cannot be written
    labeler = make_openai(server, tmp_path)
    labeler.cache_path = blocker / "cache" / "answers.sqlite"
    with caplog.at_level(logging.WARNING):
        out = labeler.label(PAIRS, seed=0)
    assert out["labels"] == [[1, 1], [1]] and "cannot be written" in caplog.text


def test_openai_floor_is_validated(server, tmp_path):
    with pytest.raises(UserError, match="min_kept_fraction"):
        make_openai(server, tmp_path, min_kept_fraction=1.5)


def test_openai_request_budget_guard(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with pytest.raises(RuntimeError, match="max_requests"):
        make_openai(server, tmp_path, max_requests=5).label(PAIRS, seed=0)
    assert server.requests == 0


# ----------------------------------------------------------------------------------------------- local judge


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    """A tiny randomly initialised Llama whose word-level vocabulary has the answer tokens "1" and "2"."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", "1", "2", "[Question]:", "[Reply", "1]:", "2]:", "a", "b", "long", "short",
             "reply", "tell", "me", "better"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512, pad_token_id=0))
    out = tmp_path_factory.mktemp("judge")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_local(judge_dir, tmp_path, **overrides) -> LocalLabeler:
    from harness.backbones import PretrainedBackbone

    backbone = PretrainedBackbone(name="judge", path=str(judge_dir), max_length=512)
    # A random judge keeps whatever it keeps: no floor, except where a test sets one.
    return LocalLabeler(backbone=backbone, cache_dir=str(tmp_path),
                        **{"batch_size": 3, "min_kept_fraction": 0.0, **overrides})


def test_local_margins_match_unbatched_forward(judge_dir, tmp_path):
    labeler = make_local(judge_dir, tmp_path)
    texts = ["tell me a", "long reply a b a b long", "short", "a b", "tell me better reply 1 2"]
    margins = labeler.answer_margins(texts)  # batched, right-padded, mixed lengths
    tok, model = labeler.backbone.tokenizer, labeler.model
    one, two = tok.convert_tokens_to_ids(["1", "2"])
    for text, m in zip(texts, margins, strict=True):
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, -1].log_softmax(-1)
        assert float(m) == pytest.approx(float(logp[one] - logp[two]), abs=1e-5)


def test_local_labels_follow_swap_and_agree(judge_dir, tmp_path):
    labeler = make_local(judge_dir, tmp_path)
    out = labeler.label(PAIRS, seed=0)
    assert [len(r) for r in out["labels"]] == [2, 1]
    for (prompt, c, r, points), row in zip(zip(PAIRS["prompt"], PAIRS["chosen"], PAIRS["rejected"],
                                               PAIRS["cap_names"], strict=True), out["labels"], strict=True):
        for point, label in zip(points, row, strict=True):
            first, second = questions(labeler.template, {}, prompt, c, r, point)
            m1, m2 = labeler.answer_margins([labeler.render(first), labeler.render(second)])
            expected = swap_and_agree(1 if m1 > 0 else 2, 1 if m2 > 0 else 2)
            assert label == expected
    assert out["stats"]["asked"] == 3 and 0 <= out["stats"]["answered_first"] <= 1


def test_local_judge_below_the_floor_fails_and_says_why(judge_dir, tmp_path):
    labeler = make_local(judge_dir, tmp_path)
    kept = labeler.label(PAIRS, seed=0)["stats"]["kept_fraction"]
    with pytest.raises(LabelingError, match=r"labeler=local kept .* of 3 labels.*questions to the judge"):
        make_local(judge_dir, tmp_path, min_kept_fraction=min(1.0, kept + 0.01)).label(PAIRS, seed=0)


def test_local_uses_the_chat_template_when_there_is_one(judge_dir, tmp_path):
    labeler = make_local(judge_dir, tmp_path)
    labeler.load()
    assert labeler.render("q") == "q\n"  # no template: the bare question
    labeler.backbone.tokenizer.chat_template = "{% for m in messages %}U: {{ m['content'] }} {% endfor %}A:"
    assert labeler.render("q") == "U: q A:"
    assert make_local(judge_dir, tmp_path, chat_template=False).render("q") == "q\n"


def test_local_rejects_answers_outside_the_vocabulary(tiny, tmp_path):
    # The tiny world backbone's word-level vocabulary has no "1"/"2": say so instead of comparing [UNK] to [UNK].
    labeler = LocalLabeler(backbone=tiny.backbone, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not one token"):
        labeler.load()


# ----------------------------------------------------------------------------------------------- wiring


@pytest.mark.parametrize("option", ["oracle", "openai", "local"])
def test_every_labeler_config_instantiates_offline(option, monkeypatch):
    from conftest import compose

    from harness.job import build

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key needed until a question is sent
    labeler = build(compose(["arch=dmoerm", f"arch/labeler={option}"]).arch.labeler, "arch.labeler")
    assert labeler.name == option and callable(labeler.label)


def test_dmoerm_learns_from_an_openai_compatible_server(server, tiny, tmp_path, monkeypatch):
    """The generic interface end to end: DMoERM asks the HTTP server about a few pairs per domain."""
    from harness.archs.dmoerm import DMoERM

    monkeypatch.setenv(KEY_ENV, SECRET)
    rm = DMoERM(router={}, phase1={}, phase2={}, phase3={}, phase1_fraction=0.6, r=4, r_fraction=0.015625,
                lora_scaling=1.0, lora_dropout=0.0, target_modules=None, expert_val_fraction=0.0, min_expert_pairs=1,
                label_pairs_per_domain=3, capabilities=None,
                labeler=make_openai(server, tmp_path, max_concurrency=4))
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    s = rm.report["labeler"]
    assert s["name"] == "openai" and s["asked"] == sum(3 * len(p) for p in rm.points)
    assert server.requests == s["questions"] <= 2 * s["asked"] and s["kept"] > 0  # equal questions asked once
    assert torch.isfinite(rm.score(tiny.test.chosen)).all()


def test_dmoerm_fails_when_the_labeler_server_answers_nothing(server, tiny, tmp_path, monkeypatch):
    """Before: every question dropped with a warning, no expert trained, and the job ended `status: ok`."""
    from harness.archs.dmoerm import DMoERM

    monkeypatch.setenv(KEY_ENV, SECRET)
    server.default = "500"
    rm = DMoERM(router={}, phase1={}, phase2={}, phase3={}, phase1_fraction=0.6, r=4, r_fraction=0.015625,
                lora_scaling=1.0, lora_dropout=0.0, target_modules=None, expert_val_fraction=0.0, min_expert_pairs=1,
                label_pairs_per_domain=3, capabilities=None,
                labeler=make_openai(server, tmp_path, max_concurrency=4))
    with pytest.raises(LabelingError, match="no answer"):
        rm.fit(tiny.train, tiny.val, tiny.ctx())
    assert "experts" not in rm.report  # nothing was trained on the missing labels
