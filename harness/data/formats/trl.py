"""``trl``: ``prompt``, ``chosen``, ``rejected`` strings, optional ``domain``. Also TRL's conversational form:
``chosen`` / ``rejected`` are lists of ``{role, content}`` messages whose last assistant message is the response;
the prompt is a string, a message list, or -- TRL's "implicit prompt" -- the messages before that last answer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..readers import DataFormatError
from .base import Format, Row, domain, messages, text


def last_answer(conversation: list[tuple[str, str]], what: str, where: str) -> tuple[str, int]:
    """The last assistant message's content and its position."""
    for i in range(len(conversation) - 1, -1, -1):
        if conversation[i][0] == "assistant":
            return conversation[i][1], i
    raise DataFormatError(where, f"{what} has no assistant message")


def prompt_text(row: Row, conversation: list[tuple[str, str]], what: str) -> str:
    """The prompt from a conversation: its last user turn, or every turn (``data.context``)."""
    users = [content for role, content in conversation if role == "user"]
    if not users:
        raise DataFormatError(row.where, f"{what} has no user turn")
    return users[-1] if row.opts.context == "last_turn" else "\n".join(content for _, content in conversation)


def _looks_like_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def trl_pair(row: Row) -> dict:
    """One pair from a TRL row (plain strings or conversational message lists)."""
    k_prompt, k_chosen, k_rejected = row.what("prompt"), row.what("chosen"), row.what("rejected")
    chosen_v, rejected_v = row.get("chosen"), row.get("rejected")
    conversational = isinstance(chosen_v, list)
    chosen_conv, rejected_conv = _looks_like_conversation(chosen_v), _looks_like_conversation(rejected_v)
    if chosen_conv and isinstance(rejected_v, str) or rejected_conv and isinstance(chosen_v, str):
        shape = {True: "a conversation (a list of messages)", False: "a string"}
        raise DataFormatError(row.where, f"{k_chosen} is {shape[chosen_conv]} but {k_rejected} is "
                                         f"{shape[rejected_conv]}: give both as strings or both as lists of "
                                         "{role, content} messages")
    prompt_v = row.get("prompt", required=not conversational)  # conversational rows may carry it implicitly
    if conversational:
        chosen_msgs = messages(chosen_v, k_chosen, row.where)
        rejected_msgs = messages(rejected_v, k_rejected, row.where)
        chosen, at = last_answer(chosen_msgs, k_chosen, row.where)
        rejected, at_rejected = last_answer(rejected_msgs, k_rejected, row.where)
        if chosen_msgs[:at] != rejected_msgs[:at_rejected]:
            # One prompt is read from the chosen side: a rejected answer to another conversation is no preference.
            i = next((i for i, (a, b) in enumerate(zip(chosen_msgs[:at], rejected_msgs[:at_rejected], strict=False))
                      if a != b), min(at, at_rejected))
            raise DataFormatError(row.where, f"{k_chosen} and {k_rejected} differ before their last assistant "
                                             f"message (at message {i}): both must answer the same conversation")
        if prompt_v is None:
            prompt = prompt_text(row, chosen_msgs[:at], f"{k_chosen} (before its last assistant message)")
    else:
        chosen, rejected = text(chosen_v, k_chosen, row.where), text(rejected_v, k_rejected, row.where)
    if prompt_v is not None or not conversational:  # a plain row's prompt must be there, and not null
        if isinstance(prompt_v, list):
            prompt = prompt_text(row, messages(prompt_v, k_prompt, row.where), k_prompt)
        else:
            prompt = text(prompt_v, k_prompt, row.where)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "domain": domain(row.get("domain", required=False), row.what("domain"), row.where), "where": row.where}


class TRL(Format):
    name = "trl"
    optional = ("prompt", "domain")

    def required(self, opts) -> list[str]:
        return ["chosen", "rejected"]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        for row in rows:
            yield trl_pair(row)
