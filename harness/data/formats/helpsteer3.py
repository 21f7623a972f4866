"""``helpsteer3`` (nvidia/HelpSteer3, preference subset): ``context`` (the conversation so far, a list of
``{role, content}`` messages), ``response1``, ``response2``, ``overall_preference`` in -3..3 (negative: response1 is
better, positive: response2, 0: a tie) and optional ``domain`` (general, stem, code, multilingual). The prompt is
the context's last user turn (``data.context=last_turn``) or all its turns (``dialogue``); ``|overall_preference|``
is kept as the pair's ``margin``. Ties carry no preference: dropped, and counted in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from ..readers import DataFormatError
from .base import Format, Row, domain, messages, number, text
from .trl import prompt_text

log = logging.getLogger(__name__)

# HelpSteer3's preference scale: -3 (response1 much better) .. 3 (response2 much better).
PREFERENCE_RANGE = (-3, 3)


class HelpSteer3(Format):
    name = "helpsteer3"
    optional = ("domain",)

    def required(self, opts) -> list[str]:
        return ["context", "response1", "response2", "overall_preference"]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        ties, n_rows, source = 0, 0, ""
        low, high = PREFERENCE_RANGE
        for row in rows:
            n_rows += 1
            source = row.where.rpartition(", ")[0]
            k_pref = row.what("overall_preference")
            preference = number(row.get("overall_preference"), k_pref, row.where)
            if preference != int(preference) or not low <= preference <= high:
                raise DataFormatError(row.where, f"{k_pref}={preference:g} must be an integer in {low}..{high}")
            conversation = messages(row.get("context"), row.what("context"), row.where)
            response1 = text(row.get("response1"), row.what("response1"), row.where)
            response2 = text(row.get("response2"), row.what("response2"), row.where)
            if preference == 0:
                ties += 1
                continue
            chosen, rejected = (response1, response2) if preference < 0 else (response2, response1)
            yield {"prompt": prompt_text(row, conversation, row.what("context")), "chosen": chosen,
                   "rejected": rejected, "margin": abs(preference),
                   "domain": domain(row.get("domain", required=False), row.what("domain"), row.where),
                   "where": row.where}
        log.info("%s: %d of %d rows are ties (overall_preference 0): dropped", source, ties, n_rows)
