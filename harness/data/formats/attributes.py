"""``attributes`` (HelpSteer2, methods.md §7.2): one row per (``prompt``, ``response``) with ratings (default the
five HelpSteer2 attributes, 0-4), optional ``domain`` -> every pair of responses to the same prompt whose overall
score (``data.overall``: one attribute, default helpfulness, or weights per attribute) differs, the higher one
chosen. The ratings become the capability columns ``cap_names`` / ``cap_chosen`` / ``cap_rejected`` (as in
synthetic data), so DMoERM can learn one expert per attribute."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..readers import DataFormatError
from .base import Format, Row, domain, number, text


def rated_attributes(opts) -> list[str]:
    """The attributes a row must rate: the capability attributes and those of the overall score, once each."""
    return list(dict.fromkeys(opts.attributes + list(opts.overall)))


def attribute_rating(row: Row) -> dict:
    """One rated response: its prompt, text, domain, attribute values and overall score."""
    opts = row.opts
    ratings = {}
    for name in rated_attributes(opts):
        value = number(row.get(name), row.what(name), row.where)
        bounds = opts.attribute_range
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise DataFormatError(row.where, f"{row.what(name)}={value:g} is outside data.attribute_range={bounds}")
        ratings[name] = value
    return {"prompt": text(row.get("prompt"), row.what("prompt"), row.where),
            "response": text(row.get("response"), row.what("response"), row.where),
            "domain": domain(row.get("domain", required=False), row.what("domain"), row.where),
            "values": [ratings[a] for a in opts.attributes],
            "overall": sum(w * ratings[a] for a, w in opts.overall.items()), "where": row.where}


class Attributes(Format):
    name = "attributes"
    optional = ("domain",)

    def required(self, opts) -> list[str]:
        return ["prompt", "response", *rated_attributes(opts)]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        """Every pair of responses to the same prompt with unequal overall score, the higher one chosen; the
        attribute values go to the capability columns. Needs every row before the first pair."""
        rated = [attribute_rating(row) for row in rows]  # every row is checked before any grouping error
        by_prompt: dict[str, list[dict]] = {}
        for r in rated:
            group = by_prompt.setdefault(r["prompt"], [])
            if group and r["domain"] != group[0]["domain"]:
                raise DataFormatError(r["where"], f"domain {r['domain']!r} differs from {group[0]['domain']!r} of "
                                                  f"the same prompt at {group[0]['where']}")
            group.append(r)
        for group in by_prompt.values():
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    a, b = group[i], group[j]
                    if a["overall"] == b["overall"]:
                        continue
                    best, worst = (a, b) if a["overall"] > b["overall"] else (b, a)
                    yield {"prompt": a["prompt"], "chosen": best["response"], "rejected": worst["response"],
                           "domain": a["domain"], "cap_names": list(opts.attributes),
                           "cap_chosen": best["values"], "cap_rejected": worst["values"],
                           "where": f"{a['where']} and {b['where'].rpartition(', ')[2]}"}
