"""Row formats: how the rows of one file (or hub split) become preference pairs.

One module per format, each a ``Format`` (formats/base.py): the fields a row must have -- what detection looks for
-- and how rows become pairs. Adding a format is its module plus its entry in ``FORMATS``, whose order is the
detection order, most specific first (a RewardBench row is also a TRL row).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..readers import DataFormatError
from .attributes import Attributes
from .base import Format, Row
from .helpsteer3 import HelpSteer3
from .hh import HH
from .ranked import Ranked
from .rewardbench import RewardBench
from .trl import TRL
from .ultrafeedback import UltraFeedback

if TYPE_CHECKING:
    from ..options import FormatOptions

log = logging.getLogger(__name__)

# Every format by name, in detection order.
FORMATS: dict[str, Format] = {f.name: f for f in (Ranked(), Attributes(), HelpSteer3(), UltraFeedback(), RewardBench(),
                                                 HH(), TRL())}


def detect(raw: dict, where: str, opts: FormatOptions) -> str:
    """The first format whose required keys (after the data.columns mapping) the row has, and whose content it
    looks like (for formats that share their keys with another: hh and trl)."""
    for name, fmt in FORMATS.items():
        if set(opts.keys(fmt.required(opts))) <= set(raw) and fmt.looks_like(raw, opts):
            return name
    wants = "; ".join(f"{name} needs {opts.keys(fmt.required(opts))}" for name, fmt in FORMATS.items())
    raise DataFormatError(where, f"cannot tell the data format from the first row's keys {sorted(raw)} ({wants}). "
                                 "Set data.format, and map your keys with data.columns (e.g. "
                                 "data.columns={prompt: question})")


def check_pair(pair: dict, where: str, opts: FormatOptions) -> bool:
    """Whether a converted pair is kept: a text over ``data.max_field_chars`` is an error; a pair with
    chosen == rejected (no preference) is an error, or dropped with ``data.drop_identical``."""
    limit = opts.max_field_chars
    for name in ("prompt", "chosen", "rejected"):
        if limit is not None and len(pair[name]) > limit:
            raise DataFormatError(where, f"the {name} text is {len(pair[name]):,} characters long, more than "
                                         f"data.max_field_chars={limit:,}: a field this long is almost surely a "
                                         "mistake (the reward model reads only backbone.max_length tokens); fix "
                                         "the row, or raise data.max_field_chars (null = no limit)")
    if pair["chosen"] != pair["rejected"]:
        return True
    if not opts.drop_identical:
        raise DataFormatError(where, "the chosen and the rejected response are the same text, so the pair states no "
                                     "preference: fix the row, or set data.drop_identical=true to drop such pairs "
                                     "(counted in the log)")
    return False


def convert(rows: Iterable[tuple[str, dict]], source: str, opts: FormatOptions,
            fmt: str | None) -> tuple[str, dict, int]:
    """All rows of one source -> (format, columns of pairs, identical pairs dropped). ``fmt`` None: detect it from
    the first row."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        raise DataFormatError(source, "no preference pairs in 0 rows")
    if fmt is None:
        fmt = detect(first[1], first[0], opts)
        log.info("%s: detected data.format=%s", source, fmt)
    n_rows = 0

    def read() -> Iterator[Row]:
        nonlocal n_rows
        for where, raw in itertools.chain([first], rows):
            n_rows += 1
            yield Row(raw, where, opts)

    pairs, dropped = [], 0
    for pair in FORMATS[fmt].pairs(read(), opts):
        if check_pair(pair, pair.pop("where"), opts):
            pairs.append(pair)
        else:
            dropped += 1
    if not pairs:
        why = (f"all {dropped} had the same chosen and rejected text" if dropped
               else "no two responses to one prompt are rated differently")
        raise DataFormatError(source, f"no preference pairs in {n_rows} rows ({why})")
    return fmt, {k: [p[k] for p in pairs] for k in pairs[0]}, dropped
