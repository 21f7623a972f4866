"""What every row format builds on: the ``Format`` interface, one raw row read through ``data.columns``
(``Row``), and the checks every field goes through -- each returns the value in its clean form or raises a
``DataFormatError`` naming the row (``where``) and the field."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..readers import DataFormatError, kind

if TYPE_CHECKING:
    from ..options import FormatOptions


class Format:
    """One row format (the seam): the fields a row must have, and how rows become pairs.

    A pair is a dict with ``prompt``, ``chosen``, ``rejected``, ``domain`` ("" when unknown), optionally the
    capability columns ``cap_names`` / ``cap_chosen`` / ``cap_rejected`` or a ``margin`` (how much better chosen
    is, in the source's own units), and ``where``: the row(s) it came from.
    """

    name: str
    # Fields a row may have besides the required ones (data.columns may map them).
    optional: tuple[str, ...] = ()

    def required(self, opts: FormatOptions) -> list[str]:
        """The fields (names before the data.columns mapping) a row must have to be read as this format."""
        raise NotImplementedError

    def looks_like(self, raw: dict, opts: FormatOptions) -> bool:
        """Detection beyond the keys, for a format whose keys another format shares (hh's transcripts are trl's
        keys): does this first row's content look like this format?"""
        return True

    def pairs(self, rows: Iterable[Row], opts: FormatOptions) -> Iterator[dict]:
        """The pairs of all rows of one source, in row order."""
        raise NotImplementedError


class Row:
    """One raw row read through ``data.columns``; a missing key is an error naming the row and the key."""

    def __init__(self, raw: dict, where: str, opts: FormatOptions):
        self.raw, self.where, self.opts = raw, where, opts

    def key(self, name: str) -> str:
        return self.opts.key(name)

    def get(self, name: str, required: bool = True):
        """The value of field ``name``; an optional field that is absent or null reads as None."""
        key = self.key(name)
        if key not in self.raw:
            if not required:
                return None
            mapped = f" (data.columns.{name})" if key != name else ""
            raise DataFormatError(self.where, f"missing key {key!r}{mapped}; the row has keys {sorted(self.raw)}")
        return self.raw[key]

    def what(self, name: str) -> str:
        """How messages name field ``name``: the file's key, quoted."""
        return repr(self.key(name))


def text(value, what: str, where: str) -> str:
    """A non-blank string of valid Unicode."""
    if not isinstance(value, str):
        raise DataFormatError(where, f"{what} must be a string, got {kind(value)}")
    if not value.strip():
        raise DataFormatError(where, f"{what} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataFormatError(where, f"{what} holds invalid Unicode (a lone surrogate escape)") from None
    return value


def number(value, what: str, where: str) -> float:
    """A finite number (not a boolean, not a numeric string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = f" {value!r}" if isinstance(value, str) and len(value) < 40 else ""
        raise DataFormatError(where, f"{what} must be a number, got {kind(value)}{shown}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise DataFormatError(where, f"{what} must be a finite number, got {value}")
    return x


def nonempty_list(value, what: str, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise DataFormatError(where, f"{what} must be a non-empty list, got {kind(value)}")
    return value


def domain(value, what: str, where: str) -> str:
    """An optional domain label: null / absent -> "" (unknown)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(where, f"{what} must be a string or null, got {kind(value)}")
    return value


def messages(value, what: str, where: str) -> list[tuple[str, str]]:
    """A conversation: a non-empty list of ``{"role": str, "content": str}`` -> [(role, content)]."""
    if not isinstance(value, list) or not value:
        raise DataFormatError(where, f"{what} must be a string or a non-empty list of {{role, content}} messages, "
                                     f"got {kind(value)}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataFormatError(where, f"{what}[{i}] must be a {{role, content}} message, got {kind(message)}")
        for key in ("role", "content"):
            if key not in message:
                raise DataFormatError(where, f"{what}[{i}] has no {key!r}; it has keys {sorted(message)}")
        if not isinstance(message["role"], str):
            raise DataFormatError(where, f"{what}[{i}].role must be a string, got {kind(message['role'])}")
        out.append((message["role"], text(message["content"], f"{what}[{i}].content", where)))
    return out
