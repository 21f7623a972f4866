"""``rewardbench``: ``prompt``, ``chosen``, ``rejected``, ``subset`` (-> domain); otherwise read as ``trl``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .base import Format, Row, text
from .trl import trl_pair


class RewardBench(Format):
    name = "rewardbench"

    def required(self, opts) -> list[str]:
        return ["prompt", "chosen", "rejected", "subset"]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        for row in rows:
            pair = trl_pair(row)
            pair["domain"] = text(row.get("subset"), row.what("subset"), row.where)
            yield pair
