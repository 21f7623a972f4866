"""``hh`` (Anthropic HH-RLHF): ``chosen`` and ``rejected`` are whole transcripts, ``"\\n\\nHuman: ...\\n\\nAssistant:
..."``, that share every turn but the last assistant one. The shared prefix through the last ``"\\n\\nAssistant:"``
is the conversation; what follows it in each transcript is the response. The prompt is the conversation's last
Human turn (``data.context=last_turn``) or the whole prefix as written (``dialogue``). Detected by its keys (only
``chosen`` / ``rejected``, no ``prompt``) and a transcript-shaped ``chosen``. A pair whose two responses are the
same text carries no preference: dropped, and counted in the log."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

from ..readers import DataFormatError
from .base import Format, Row, domain, text

log = logging.getLogger(__name__)

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
TURN = re.compile(r"\n\n(Human|Assistant):")


def split_transcript(transcript: str, what: str, where: str) -> tuple[str, str]:
    """(conversation through the last "\\n\\nAssistant:", the response after it)."""
    at = transcript.rfind(ASSISTANT)
    if at < 0 or HUMAN not in transcript[:at]:
        raise DataFormatError(where, f"{what} is not an HH transcript: it needs a \"\\n\\nHuman:\" turn and then "
                                     f"an \"\\n\\nAssistant:\" turn, got {transcript[:60]!r}")
    cut = at + len(ASSISTANT)
    return transcript[:cut], transcript[cut:].strip()


def last_human_turn(conversation: str, where: str) -> str:
    parts = TURN.split(conversation)  # [before, role, text, role, text, ...]
    humans = [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i] == "Human"]
    if not humans or not humans[-1]:
        raise DataFormatError(where, "the conversation's last Human turn is empty")
    return humans[-1]


class HH(Format):
    name = "hh"
    optional = ("domain",)

    def required(self, opts) -> list[str]:
        return ["chosen", "rejected"]

    def looks_like(self, raw: dict, opts) -> bool:
        chosen = raw.get(opts.key("chosen"))
        return opts.key("prompt") not in raw and isinstance(chosen, str) and ASSISTANT in chosen

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        same, source = 0, ""
        for row in rows:
            source = row.where.rpartition(", ")[0]
            k_chosen, k_rejected = row.what("chosen"), row.what("rejected")
            conv_c, chosen = split_transcript(text(row.get("chosen"), k_chosen, row.where), k_chosen, row.where)
            conv_r, rejected = split_transcript(text(row.get("rejected"), k_rejected, row.where), k_rejected,
                                                row.where)
            if conv_c != conv_r:
                raise DataFormatError(row.where, f"{k_chosen} and {k_rejected} differ before their last "
                                                 "\"\\n\\nAssistant:\" turn: they must share the conversation")
            if chosen == rejected:
                same += 1
                continue
            prompt = last_human_turn(conv_c, row.where) if opts.context == "last_turn" else conv_c.lstrip("\n")
            yield {"prompt": prompt, "chosen": chosen, "rejected": rejected,
                   "domain": domain(row.get("domain", required=False), row.what("domain"), row.where),
                   "where": row.where}
        if same:
            log.info("%s: %d pairs dropped: chosen and rejected are the same response", source, same)
