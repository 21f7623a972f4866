"""``ranked`` (DMoERM's data, methods.md §2.3): ``src`` (user turns), optional ``tgt`` (the assistant turns between
them), ``response`` (candidates), ``rank`` (one number per candidate), optional ``label`` (-> domain) -> every pair
of candidates with unequal rank. ``data.better_rank`` says which rank wins; the default ``lower`` (rank 1 = best)
is what DMoERM's training code and its capability labels use (its evaluation code reads ranks the other way
round, a bug: methods.md §2.6 item 3)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..readers import DataFormatError, kind
from .base import Format, Row, domain, nonempty_list, number, text


def ranked_pairs(row: Row) -> Iterator[dict]:
    """Every pair of candidates of unequal rank, the better one chosen (``data.better_rank``)."""
    k_src, k_tgt, k_resp, k_rank = row.what("src"), row.what("tgt"), row.what("response"), row.what("rank")
    src = row.get("src")
    users = [text(t, f"{k_src}[{i}]", row.where)
             for i, t in enumerate([src] if isinstance(src, str) else nonempty_list(src, k_src, row.where))]
    tgt = row.get("tgt", required=False)
    tgt = [] if tgt is None else [tgt] if isinstance(tgt, str) else tgt
    if not isinstance(tgt, list):
        raise DataFormatError(row.where, f"{k_tgt} must be a list of assistant turns, got {kind(tgt)}")
    answers = [text(t, f"{k_tgt}[{i}]", row.where) for i, t in enumerate(tgt)]
    if len(answers) >= len(users):
        raise DataFormatError(row.where, f"{k_tgt} has {len(answers)} assistant turns for {len(users)} user turns "
                                         f"in {k_src}: expected fewer (the last user turn is the one answered)")
    responses = [text(r, f"{k_resp}[{i}]", row.where)
                 for i, r in enumerate(nonempty_list(row.get("response"), k_resp, row.where))]
    ranks = [number(r, f"{k_rank}[{i}]", row.where)
             for i, r in enumerate(nonempty_list(row.get("rank"), k_rank, row.where))]
    if len(ranks) != len(responses):
        raise DataFormatError(row.where, f"{k_rank} has {len(ranks)} entries for {len(responses)} responses")
    label = domain(row.get("label", required=False), row.what("label"), row.where)
    if row.opts.context == "last_turn":
        prompt = users[-1]
    else:
        turns = [t for i, u in enumerate(users) for t in ([u, answers[i]] if i < len(answers) else [u])]
        prompt = "\n".join(turns)
    lower_wins = row.opts.better_rank == "lower"
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if ranks[i] == ranks[j]:
                continue  # a tie has no preferred response
            best, worst = (i, j) if (ranks[i] < ranks[j]) == lower_wins else (j, i)
            yield {"prompt": prompt, "chosen": responses[best], "rejected": responses[worst], "domain": label,
                   "where": row.where}


class Ranked(Format):
    name = "ranked"
    optional = ("tgt", "label")

    def required(self, opts) -> list[str]:
        return ["src", "response", "rank"]

    def pairs(self, rows: Iterable[Row], opts) -> Iterator[dict]:
        for row in rows:
            yield from ranked_pairs(row)
