"""The options that say how a real source's rows become pairs (the keys shared by conf/data/jsonl.yaml and
conf/data/hf.yaml), checked once when the source is built: a wrong value is a ValueError naming ``data.<key>``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .formats import FORMATS

CONTEXTS = ("last_turn", "dialogue")
BETTER_RANKS = ("lower", "higher")


def _one_of(key: str, value, valid: tuple, also: str = "") -> None:
    if value not in valid:
        raise ValueError(f"data.{key}={value!r}: valid choices are {list(valid)}{also}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class FormatOptions:
    """How rows become pairs: the format, the key mapping, and each format's knobs (see conf/data/jsonl.yaml).
    Built from the YAML values as they are; ``__post_init__`` checks them and brings them to one form."""

    # trl | rewardbench | ranked | attributes | hh | ultrafeedback | helpsteer3; None = detected from the first row.
    format: str | None
    # Field name -> the file's key.
    columns: dict[str, str] | None
    # A conversation's prompt: its last user turn, or every turn.
    context: str
    # ranked: which rank number is better.
    better_rank: str
    # attributes: the overall score -- one attribute name, or weights per attribute (-> {name: weight}).
    overall: str | dict[str, float]
    # attributes: the rated attributes, kept as capability points.
    attributes: list[str]
    # attributes: [low, high] of a valid rating; None = any finite number.
    attribute_range: list[float] | None
    # A pair whose chosen and rejected text are the same: dropped and counted (True) or an error naming its row.
    drop_identical: bool
    # Longest prompt / response text in characters; longer is an error naming the row. None = no limit.
    max_field_chars: int | None

    def __post_init__(self):
        if self.format is not None:
            _one_of("format", self.format, tuple(FORMATS), " or null (detect)")
        _one_of("context", self.context, CONTEXTS)
        _one_of("better_rank", self.better_rank, BETTER_RANKS)
        self.attributes = self._attribute_names(self.attributes)
        self.overall = self._overall_weights(self.overall)
        self.attribute_range = self._attribute_range(self.attribute_range)
        self.columns = self._columns({} if self.columns is None else self.columns)
        if not isinstance(self.drop_identical, bool):
            raise ValueError(f"data.drop_identical={self.drop_identical!r} must be true or false")
        if self.max_field_chars is not None and not (isinstance(self.max_field_chars, int) and not isinstance(
                self.max_field_chars, bool) and self.max_field_chars >= 1):
            raise ValueError(f"data.max_field_chars={self.max_field_chars!r} must be a number of characters >= 1, "
                             "or null (no limit)")

    @staticmethod
    def _attribute_names(attributes) -> list[str]:
        if (not isinstance(attributes, list) or not attributes or len(set(map(str, attributes))) != len(attributes)
                or not all(isinstance(a, str) and a for a in attributes)):
            raise ValueError(f"data.attributes={attributes!r} must be a non-empty list of distinct names")
        return list(attributes)

    @staticmethod
    def _overall_weights(overall) -> dict[str, float]:
        overall = {overall: 1.0} if isinstance(overall, str) else overall
        if not isinstance(overall, dict) or not overall:
            raise ValueError(f"data.overall={overall!r} must be an attribute name or weights per attribute, e.g. "
                             "{helpfulness: 1, correctness: 0.5}")
        for name, weight in overall.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"data.overall: {name!r} is not an attribute name")
            if not _is_number(weight) or not math.isfinite(weight):
                raise ValueError(f"data.overall.{name}={weight!r} must be a finite number")
        if not any(overall.values()):
            raise ValueError(f"data.overall={overall!r}: at least one weight must be non-zero")
        return {name: float(weight) for name, weight in overall.items()}

    @staticmethod
    def _attribute_range(bounds) -> list[float] | None:
        if bounds is None:
            return None
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_is_number, bounds))
                and bounds[0] < bounds[1]):
            raise ValueError(f"data.attribute_range={bounds!r} must be [low, high] with low < high, or null (any "
                             "finite number)")
        return [float(v) for v in bounds]

    def _columns(self, columns) -> dict[str, str]:
        if not isinstance(columns, dict) or not all(isinstance(v, str) and v for v in columns.values()):
            raise ValueError(f"data.columns={columns!r} must map field names to the file's keys, e.g. "
                             "{prompt: question}")
        known = {f for fmt in FORMATS.values() for f in (*fmt.required(self), *fmt.optional)}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(f"data.columns: unknown fields {unknown}; valid: {sorted(known)}")
        return dict(columns)

    def describe(self) -> dict:
        """The options as plain values (part of cache keys)."""
        return asdict(self)

    def key(self, name: str) -> str:
        """The file's key for field ``name``: the ``data.columns`` mapping, else the name itself."""
        return self.columns.get(name, name)

    def keys(self, names: list[str]) -> list[str]:
        return [self.key(n) for n in names]
