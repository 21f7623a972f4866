"""Reading preference files row by row: ``(where, row)`` for every row of a JSONL or Parquet file, where ``where``
names the file and the line (JSONL, 1-based) or row index (Parquet, 0-based) for error messages.

A reader only reads: it turns bytes into JSON-like dicts and knows nothing of the row formats
(harness/data/formats/). A new file type is one reader function plus its suffixes in ``READERS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path


class DataFormatError(ValueError):
    """A malformed data file or row. ``where`` is "FILE, line N", "FILE, row index N" or "FILE"."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


Rows = Iterator[tuple[str, dict]]


def kind(value) -> str:
    """A value's type in JSON words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def jsonl_rows(path: Path) -> Rows:
    """One JSON object per line; blank lines (and the newline ending the file) are not rows."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}, line {lineno}"
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(where, f"not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # the byte-order mark some editors write
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(where, f"not valid JSON: {e.msg} at column {e.colno}") from None
            except (ValueError, RecursionError) as e:  # integers too long to parse, absurd nesting
                raise DataFormatError(where, f"not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise DataFormatError(where, f"expected a JSON object {{...}}, got {kind(row)}")
            yield where, row


def parquet_rows(path: Path) -> Rows:
    """Row group by row group, so a large file is never held in memory as Python objects at once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    unreadable = (pa.ArrowException, OSError, ValueError)
    try:
        pfile = pq.ParquetFile(path)
    except unreadable as e:
        raise DataFormatError(str(path), f"not a readable Parquet file: {e}") from None
    index = 0
    for group in range(pfile.num_row_groups):
        try:
            rows = pfile.read_row_group(group).to_pylist()
        except unreadable as e:
            raise DataFormatError(f"{path}, row group {group}", f"unreadable: {e}") from None
        for row in rows:
            yield f"{path}, row index {index}", row
            index += 1


# File suffix (lower case) -> its reader.
READERS: dict[str, Callable[[Path], Rows]] = {".jsonl": jsonl_rows, ".ndjson": jsonl_rows,
                                              ".parquet": parquet_rows, ".pq": parquet_rows}


def read_rows(path: Path) -> Rows:
    """``(where, row)`` for every row of a data file, in file order; the reader is chosen by the suffix."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataFormatError(str(path), f"unsupported file type {path.suffix.lower()!r}: use .jsonl (one JSON "
                                         "object per line) or .parquet")
    yield from reader(path)
