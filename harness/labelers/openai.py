"""openai: capability labels from any OpenAI-compatible chat-completions endpoint (the paper used ERNIE 4.0).

Each (pair, point) is asked twice with the responses swapped, in the paper's template (English or Chinese), and
answers are read with its rule (the first of '1'/'2' wins). Requests run in a bounded thread pool, retry with
exponential backoff on 429, 5xx, timeouts and broken connections, and every answer is kept in an sqlite cache
under ``cache_dir`` keyed by a hash of (base_url, model, messages, sampling settings): a rerun never pays twice.

A server that cannot answer stops the run early: 401/403/404 at once, and ``max_consecutive_failures`` requests
in a row that got no answer (refused or dropped connections, timeouts, 5xx; not 429, which a live server sends)
end it with a ``LabelingError`` instead of retrying every question for minutes. A run that keeps fewer than
``min_kept_fraction`` of its labels fails too, saying how many questions were answered and why the rest were not.

The API key is read from the environment variable named by ``api_key_env`` at request time, put in the
Authorization header and nowhere else: not in the cache, the logs, the stats or any error message.
Only the standard library talks HTTP (no SDK dependency).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import sqlite3
import threading
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..errors import UserError
from ..progress import progress
from . import (
    LabelingError,
    check_min_kept_fraction,
    columns,
    parse_answer,
    questions,
    require_kept,
    resolve_template,
    summarize,
    swap_and_agree,
)

log = logging.getLogger(__name__)

# Status codes that say "this request will never succeed as configured": stop instead of dropping every label.
FATAL_STATUS = (401, 403, 404)
CREATE_ANSWERS = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, content TEXT)"


class OpenAILabeler:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None,
        cache_dir: str,
        language: str = "en",
        template: str | None = None,
        point_names: dict[str, str] | None = None,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        max_requests: int | None = None,
        min_kept_fraction: float = 0.2,
        max_consecutive_failures: int = 10,
    ):
        if max_concurrency < 1:
            raise ValueError(f"arch.labeler.max_concurrency={max_concurrency} must be >= 1")
        if max_retries < 0:
            raise ValueError(f"arch.labeler.max_retries={max_retries} must be >= 0")
        if timeout_s <= 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("arch.labeler.timeout_s must be > 0 and backoff_s, max_backoff_s >= 0")
        if max_tokens < 1:
            raise ValueError(f"arch.labeler.max_tokens={max_tokens} must be >= 1")
        if max_consecutive_failures < 1:
            raise ValueError(f"arch.labeler.max_consecutive_failures={max_consecutive_failures} must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.cache_path = Path(cache_dir).expanduser() / "answers.sqlite"
        self.template = resolve_template(language, template)
        self.point_names = dict(point_names or {})
        self.system_prompt = system_prompt
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency, self.max_requests = max_concurrency, max_requests
        self.min_kept_fraction = check_min_kept_fraction(min_kept_fraction)
        self.max_consecutive_failures = max_consecutive_failures

    # -- one request ------------------------------------------------------------------------------
    def messages(self, question: str) -> list[dict]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": question}]

    def cache_key(self, question: str) -> str:
        # The server is part of the key: the same model name on another server is another judge.
        doc = [self.base_url, self.model, self.messages(question), self.temperature, self.max_tokens]
        return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None  # a local server that wants no key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise UserError(f"arch/labeler=openai: the environment variable {self.api_key_env!r} "
                            f"(arch.labeler.api_key_env) is not set; export the API key there, or set "
                            f"arch.labeler.api_key_env=null for a keyless server")
        return key

    def check(self) -> None:
        """What the job checks before training: the API key is where the config says."""
        self._api_key()

    def ask(self, question: str, run: _Run | None = None) -> dict:
        """POST one question; returns {"status": ok | malformed | failed | stopped, "content", "attempts"}.

        ``run`` (shared by the questions of one ``label`` call) counts requests in a row without an answer and
        tells every worker to stop once the server looks dead."""
        run = run or _Run(self.max_consecutive_failures)
        body = json.dumps({"model": self.model, "messages": self.messages(question),
                           "temperature": self.temperature, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempts, reason = 0, ""
        while True:
            if run.stop.is_set():
                return {"status": "stopped", "content": None, "attempts": attempts, "reason": "stopped"}
            attempts += 1
            retry_after = None
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                try:
                    content = json.loads(raw)["choices"][0]["message"]["content"]
                    if not isinstance(content, str):
                        raise TypeError(f"content is {type(content).__name__}")
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    run.answered()  # the server is alive, only this answer is unusable
                    return {"status": "malformed", "content": None, "attempts": attempts, "reason": repr(e)}
                run.answered()
                return {"status": "ok", "content": content, "attempts": attempts}
            except urllib.error.HTTPError as e:
                e.close()
                if e.code in FATAL_STATUS:
                    run.stop.set()
                    raise LabelingError(f"arch/labeler=openai: HTTP {e.code} from {self.url} (check "
                                        f"arch.labeler.base_url, arch.labeler.model and the key in "
                                        f"${self.api_key_env})") from None
                if not (e.code == 429 or e.code == 408 or e.code >= 500):
                    return {"status": "failed", "content": None, "attempts": attempts, "reason": f"HTTP {e.code}"}
                reason = f"HTTP {e.code}"
                retry_after = _seconds(e.headers.get("Retry-After")) if e.headers else None
                if e.code != 429:  # a rate limit is a live server asking us to slow down, not a dead one
                    run.no_answer(reason)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                # Timeouts, refused and dropped connections: worth another try.
                reason = type(getattr(e, "reason", e)).__name__
                run.no_answer(reason)
            if attempts > self.max_retries:
                return {"status": "failed", "content": None, "attempts": attempts, "reason": reason}
            wait = self.backoff_s * 2 ** (attempts - 1)
            # An Event wait rather than sleep: a stop (fatal status, dead server) wakes every worker at once.
            run.stop.wait(min(self.max_backoff_s, retry_after if retry_after is not None else wait))

    # -- a whole label request ----------------------------------------------------------------------
    def label(self, pairs, seed: int, world=None) -> dict:
        cols = columns(pairs)
        unique: dict[str, str] = {}  # cache key -> question text
        slots = []  # per pair, per point: (key of the question with chosen first, key of the swapped one)
        for prompt, chosen, rejected, points in zip(cols["prompt"], cols["chosen"], cols["rejected"],
                                                    cols["cap_names"], strict=True):
            row = []
            for point in points:
                keys = []
                for q in questions(self.template, self.point_names, prompt, chosen, rejected, point):
                    keys.append(self.cache_key(q))
                    unique[keys[-1]] = q
                row.append(tuple(keys))
            slots.append(row)
        db, writable = self._open_cache()
        try:
            answers: dict[str, str | None] = {}
            for key in unique:
                row = db.execute("SELECT content FROM answers WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    answers[key] = row[0]
            missing = [k for k in unique if k not in answers]
            if self.max_requests is not None and len(missing) > self.max_requests:
                raise RuntimeError(f"arch/labeler=openai: {len(missing)} uncached questions exceed max_requests="
                                   f"{self.max_requests}; raise it or label fewer pairs")
            counts = {"questions": len(unique), "cache_hits": len(unique) - len(missing), "requests": 0,
                      "retries": 0, "malformed": 0, "failed": 0}
            reasons: Counter = Counter()  # why questions were dropped, for the error message
            if missing:
                self._api_key()  # fail before the first request, not in a worker thread
                log.info("arch/labeler=openai: %d questions, %d cached, asking %s at %s for %d", len(unique),
                         counts["cache_hits"], self.model, self.base_url, len(missing))
            run = _Run(self.max_consecutive_failures)
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                futures = {pool.submit(self.ask, unique[k], run): k for k in missing}
                try:
                    for future in progress(as_completed(futures), total=len(futures),
                                           desc="arch/labeler=openai: questions", unit="q"):
                        key, result = futures[future], future.result()
                        counts["requests"] += result["attempts"]
                        counts["retries"] += max(0, result["attempts"] - 1)
                        if result["status"] == "ok":
                            answers[key] = result["content"]
                            if writable:  # committed as each answer arrives: an interrupted run keeps what it paid for
                                db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                                           (key, self.model, result["content"]))
                                db.commit()
                        elif result["status"] != "stopped":
                            counts[result["status"]] += 1
                            reasons[f"{result['status']}: {result.get('reason', '')}"] += 1
                            log.warning("arch/labeler=openai: question dropped (%s: %s)", result["status"],
                                        result.get("reason", ""))
                    if run.dead is not None:
                        raise LabelingError(
                            f"arch/labeler=openai: stopped after {self.max_consecutive_failures} requests in a row got "
                            f"no answer from {self.url} (model {self.model}; {run.dead}); {len(answers)} of "
                            f"{len(unique)} questions answered. Is the server running at arch.labeler.base_url? "
                            "(arch.labeler.max_consecutive_failures sets how many failures in a row end the run)")
                except BaseException:
                    run.stop.set()  # wakes workers waiting to retry
                    pool.shutdown(wait=False, cancel_futures=True)  # a fatal error: do not send the rest
                    raise
        finally:
            db.close()

        parsed = {k: parse_answer(answers.get(k)) for k in unique}
        counts["unparseable"] = sum(1 for k, v in parsed.items() if v is None and answers.get(k) is not None)
        labels = [[swap_and_agree(parsed[k1], parsed[k2]) for k1, k2 in row] for row in slots]
        stats = summarize(labels, cols, **counts)
        readable = [v for v in parsed.values() if v is not None]
        stats["answered_first"] = sum(v == 1 for v in readable) / max(1, len(readable))  # position-bias check
        dropped = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"
        require_kept(stats, self.min_kept_fraction, "arch/labeler=openai", (
            f"{len(unique)} questions to {self.url} (model {self.model}): {len(unique) - len(missing)} from the "
            f"cache, {len(missing)} asked; dropped: {dropped}; {counts['unparseable']} answers named neither reply; "
            f"{len(readable)} readable answers, {stats['answered_first']:.0%} of them 'reply 1' (swap-and-agree "
            f"drops a label whose two answers disagree)"))
        return {"labels": labels, "stats": stats}

    def _open_cache(self) -> tuple[sqlite3.Connection, bool]:
        """The answer cache and whether new answers can be kept in it. A cache directory that cannot be written
        (a read-only copy) is still read; answers asked now are then not kept, with a warning."""
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.cache_path, timeout=60)  # parallel jobs may share it
            db.execute(CREATE_ANSWERS)
            return db, True
        except (OSError, sqlite3.Error) as e:
            log.warning("arch/labeler=openai: the answer cache %s cannot be written (%s): reading it, but answers "
                        "asked now are not kept", self.cache_path, e)
        if self.cache_path.is_file():
            return sqlite3.connect(f"{self.cache_path.resolve().as_uri()}?mode=ro", uri=True), False
        db = sqlite3.connect(":memory:")
        db.execute(CREATE_ANSWERS)
        return db, False


class _Run:
    """State shared by the worker threads of one ``label`` call: requests in a row without an answer, and the
    stop signal set when that count reaches the limit (or a fatal status arrives)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.stop = threading.Event()
        self.dead: str | None = None  # why the run was stopped as dead, once it is
        self._lock = threading.Lock()
        self._in_a_row: Counter = Counter()

    def answered(self) -> None:
        with self._lock:
            self._in_a_row.clear()

    def no_answer(self, reason: str) -> None:
        with self._lock:
            self._in_a_row[reason] += 1
            if sum(self._in_a_row.values()) >= self.limit and self.dead is None:
                self.dead = ", ".join(f"{n} x {r}" for r, n in self._in_a_row.most_common())
                self.stop.set()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date Retry-After: fall back to our own backoff
