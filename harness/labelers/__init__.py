"""Capability labelers for DMoERM (SPEC §6, methods.md §2.4): which of two responses is better on one point.

The interface every labeler (``conf/labeler/*.yaml``) implements::

    labeler.label(pairs, seed, world=None) -> {"labels": [[+1 | -1 | 0 per point] per pair], "stats": {...}}

``pairs`` is a ``datasets.Dataset`` or a dict of equal-length lists with columns ``prompt``, ``chosen``,
``rejected``, ``domain`` and ``cap_names`` (the points to ask about, per pair), and optionally ``cap_chosen`` /
``cap_rejected`` (true point values, synthetic data only: read for the agreement statistic, never to label).
A label is +1 when ``chosen`` is better on that point, -1 when ``rejected`` is, 0 when dropped. ``world`` is the
synthetic world (the oracle's judges); the other labelers ignore it.

Every labeler asks each question twice, once with the responses swapped, and keeps a label only when both
answers name the same response (DMoERM's position-debiasing rule), so the helpers below are shared.

A labeler that keeps less than its ``min_kept_fraction`` of the labels it was asked for raises ``LabelingError``
(``require_kept``) saying how many were asked, kept and dropped for which reason: an unreachable server or a judge
that always answers "the first one" must not end as a job with untrained capability experts and ``status: ok``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import UserError


class LabelingError(RuntimeError):
    """A labelling run that cannot give usable labels: too few kept, or a server that stopped answering."""


def check_min_kept_fraction(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"arch.labeler.min_kept_fraction={value!r} must be a number in [0, 1]")
    return float(value)


def require_kept(stats: Mapping, min_kept_fraction: float, who: str, why: str) -> None:
    """Raise LabelingError when the kept fraction of ``stats`` (from ``summarize``) is below the floor; ``why``
    says what happened to the questions (answered, failed by reason, ...) and where they went."""
    if stats["asked"] and stats["kept_fraction"] < min_kept_fraction:
        raise LabelingError(
            f"{who} kept {stats['kept']} of {stats['asked']} labels (kept_fraction {stats['kept_fraction']:.3f} < "
            f"arch.labeler.min_kept_fraction={min_kept_fraction}): {why}. Too few labels to train the capability "
            f"experts on; fix the judge, or lower arch.labeler.min_kept_fraction to accept it."
        )

# The paper's question (methods.md §2.4, `prepare_data/main.py`). Reply 1 / reply 2 are the two responses in the
# order shown. The reference code has 8 stray spaces before 【回复1】 (a backslash continuation inside an
# f-string); they are an accident of formatting, not part of the question, so they are left out.
TEMPLATES = {
    "zh": "给定提问和两个回复，判断回复1和回复2在【{point}】方面哪个更好。\n【提问】：{query}\n【回复1】：{response1}\n"
          "【回复2】：{response2}",
    "en": "Given a question and two replies, judge which of reply 1 and reply 2 is better in terms of [{point}].\n"
          "[Question]: {query}\n[Reply 1]: {response1}\n[Reply 2]: {response2}",
}

REQUIRED = ("prompt", "chosen", "rejected", "domain", "cap_names")


def resolve_template(language: str, template: str | None) -> str:
    """The question text: a custom ``template`` if given, else the paper's in ``language``."""
    if template is not None:
        missing = [f for f in ("{point}", "{query}", "{response1}", "{response2}") if f not in template]
        if missing:
            raise ValueError(f"arch.labeler.template lacks the fields {missing}")
        return template
    if language not in TEMPLATES:
        raise ValueError(f"arch.labeler.language={language!r}: valid choices are {sorted(TEMPLATES)}")
    return TEMPLATES[language]


def questions(template: str, point_names: Mapping[str, str], prompt: str, chosen: str, rejected: str,
              point: str) -> tuple[str, str]:
    """The two questions for one (pair, point): chosen shown first, then swapped (rejected shown first)."""
    shown = point_names.get(point, point)
    first = template.format(point=shown, query=prompt, response1=chosen, response2=rejected)
    second = template.format(point=shown, query=prompt, response1=rejected, response2=chosen)
    return first, second


def parse_answer(text: str | None) -> int | None:
    """The paper's rule: whichever of the characters '1' and '2' comes first in the answer wins; neither -> None."""
    if not text:
        return None
    i1, i2 = text.find("1"), text.find("2")
    if i1 < 0 and i2 < 0:
        return None
    if i2 < 0 or 0 <= i1 < i2:
        return 1
    return 2


def swap_and_agree(first: int | None, second: int | None) -> int:
    """Combine the answers (1 or 2 = which reply is better, None = no answer) of the question with chosen shown
    first and of the swapped one: +1 when both say chosen, -1 when both say rejected, else 0 (dropped)."""
    if first is None or second is None:
        return 0
    chosen_first = 1 if first == 1 else -1  # reply 1 was chosen
    chosen_second = 1 if second == 2 else -1  # reply 2 was chosen
    return chosen_first if chosen_first == chosen_second else 0


def columns(pairs) -> dict[str, list]:
    """The label request as plain lists, whatever container ``pairs`` is."""
    names = pairs.column_names if hasattr(pairs, "column_names") else list(pairs)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ValueError(f"labeler: pairs lack the columns {missing} (need {list(REQUIRED)})")
    out = {c: list(pairs[c]) for c in REQUIRED}
    n = len(out["prompt"])
    if any(len(v) != n for v in out.values()):
        raise ValueError("labeler: columns of unequal length")
    if "cap_chosen" in names and "cap_rejected" in names:
        out["cap_chosen"], out["cap_rejected"] = list(pairs["cap_chosen"]), list(pairs["cap_rejected"])
    return out


def true_order(cols: Mapping[str, list]) -> list[list[int]] | None:
    """Per pair and point, the sign of (true value of chosen - true value of rejected); None without values."""
    if "cap_chosen" not in cols:
        return None
    return [[(a > b) - (a < b) for a, b in zip(vc, vr, strict=True)]
            for vc, vr in zip(cols["cap_chosen"], cols["cap_rejected"], strict=True)]


def summarize(labels: list[list[int]], cols: Mapping[str, list], **counts) -> dict:
    """asked / kept / kept fraction, and, where true values exist, how often kept labels match the true order
    (over kept labels whose pair is not tied on that point; labels kept on true ties are counted apart)."""
    asked = sum(len(row) for row in labels)
    kept = sum(1 for row in labels for v in row if v != 0)
    stats = {"asked": asked, "kept": kept, "kept_fraction": kept / max(1, asked), **counts}
    truth = true_order(cols)
    if truth is not None:
        decided = agree = on_ties = 0
        for row, true_row in zip(labels, truth, strict=True):
            for v, t in zip(row, true_row, strict=True):
                if v == 0:
                    continue
                if t == 0:
                    on_ties += 1
                else:
                    decided += 1
                    agree += int(v == t)
        stats.update(agreement_with_truth=agree / max(1, decided), kept_on_true_ties=on_ties)
    return stats
