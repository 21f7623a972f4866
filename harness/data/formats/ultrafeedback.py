"""``ultrafeedback`` (UltraFeedback binarized, e.g. HuggingFaceH4/ultrafeedback_binarized): ``prompt``, ``chosen`` and
``rejected`` as in TRL's conversational form (message lists whose last assistant message is the response) or plain
strings, and ``score_chosen`` / ``score_rejected`` (GPT-4 ratings). The score difference is kept as the pair's
``margin``. A chosen rated below its rejected is an error; equal ratings are a tie: dropped, and counted in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from ..readers import DataFormatError
from .base import Format, Row, number
from .trl import trl_pair

log = logging.getLogger(__name__)


class UltraFeedback(Format):
    name = "ultrafeedback"
    optional = ("domain",)

    def required(self, opts) -> list[str]:
        return ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        ties, source = 0, ""
        for row in rows:
            source = row.where.rpartition(", ")[0]
            s_chosen = number(row.get("score_chosen"), row.what("score_chosen"), row.where)
            s_rejected = number(row.get("score_rejected"), row.what("score_rejected"), row.where)
            if s_chosen < s_rejected:
                raise DataFormatError(row.where, f"{row.what('score_chosen')}={s_chosen:g} is below "
                                                 f"{row.what('score_rejected')}={s_rejected:g}: the chosen response "
                                                 "must be the better rated one")
            if s_chosen == s_rejected:
                ties += 1
                continue
            yield {**trl_pair(row), "margin": s_chosen - s_rejected}
        if ties:
            log.info("%s: %d ties dropped (score_chosen == score_rejected)", source, ties)
