"""``python -m harness.serve PATH [--host 127.0.0.1] [--port 5000] [--batch-size N] [--device auto] [--precision
fp32]``: an exported reward model
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

``labels`` and any other fields are accepted and ignored. Requests are scored in batches of ``--batch-size``, one at
a time (some architectures switch adapters or keep routing state on their modules, so concurrent forwards would
interfere). A malformed request gets a 422 with a message saying what is wrong; it never stops the server.
``GET /health`` says which model is loaded.
"""

from __future__ import annotations

import argparse
import logging
import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from .export import RewardScorer, load_reward_model

log = logging.getLogger(__name__)

DEFAULT_PORT = 5000  # OpenRLHF's serve_rm default
UNPROCESSABLE = 422


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenRLHF also sends `labels`; ignored

    query: list[str]
    prompts: list[str] | None = None


def strip_trailing(text: str, tokens: list[str]) -> str:
    """``text`` without any run of ``tokens`` (pad, end-of-sequence) at its end, nor the whitespace before them."""
    changed = True
    while changed:
        changed = False
        for token in tokens:
            stripped = text.rstrip()
            if stripped.endswith(token):
                text, changed = stripped[: -len(token)].rstrip(), True
    return text


def strip_leading(text: str, tokens: list[str]) -> str:
    changed = True
    while changed:
        changed = False
        for token in tokens:
            if text.startswith(token):
                text, changed = text[len(token):], True
    return text


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


def make_app(scorer: RewardScorer, name: str = "") -> FastAPI:
    app = FastAPI(title="rmharness reward model", description=__doc__)
    lock = threading.Lock()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("scoring failed")
        return JSONResponse(status_code=500, content={"detail": f"{type(exc).__name__}: {exc}"})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": name, "arch": scorer.info.get("arch", {}).get("_target_"),
                "prompt_template": scorer.prompt_template}

    @app.post("/get_reward")
    def get_reward(request: RewardRequest) -> dict:  # a plain def: FastAPI runs it off the event loop
        try:
            prompts, responses = split_queries(scorer, request.query, request.prompts)
        except ValueError as e:
            raise HTTPException(status_code=UNPROCESSABLE, detail=str(e)) from None
        with lock:
            rewards = scorer.score(prompts, responses).tolist()
        return {"rewards": rewards, "scores": rewards}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="an exported reward model: <job_dir>/reward_model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per forward pass (default: the job's eval.batch_size)")
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
    uvicorn.run(make_app(scorer, str(args.path)), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
