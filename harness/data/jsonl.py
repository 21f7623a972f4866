"""data=jsonl: real preference data from local files (SPEC §4) -- JSONL or Parquet rows (harness/data/readers.py)
in one of the row formats of harness/data/formats/ (trl, rewardbench, ranked, attributes; ``data.format`` null =
detected from the first row's keys; ``data.columns`` maps the formats' field names to a file's own keys, e.g.
``{prompt: question}``), turned into train/val/test splits by harness/data/source.py and cached by the files'
content hash + the options.

A malformed row is a ``DataFormatError`` naming the file, the line (JSONL, 1-based) or row index (Parquet, 0-based)
and what is wrong; nothing is skipped silently (a blank line is not a row).
"""

from __future__ import annotations

from pathlib import Path

from ..cache import sha256_file
from .options import FormatOptions
from .readers import READERS, read_rows
from .source import SPLITS, PreferenceData


class JsonlData(PreferenceData):
    """Local .jsonl / .parquet preference files (conf/data/jsonl.yaml): one file, split by prompt with
    ``fractions``, or one per split."""

    name = "jsonl"

    def __init__(self, path: str | dict, format: str | None, columns: dict | None, fractions: dict, context: str,
                 better_rank: str, overall: str | dict, attributes: list, attribute_range: list | None,
                 drop_identical: bool, max_field_chars: int | None):
        super().__init__(FormatOptions(format=format, columns=columns, context=context, better_rank=better_rank,
                                       overall=overall, attributes=attributes, attribute_range=attribute_range,
                                       drop_identical=drop_identical, max_field_chars=max_field_chars),
                         fractions)
        if isinstance(path, str):
            files = {"train": path}
        elif isinstance(path, dict) and "train" in path and set(path) <= set(SPLITS):
            files = dict(path)
        else:
            raise ValueError(f"data.path={path!r} must be a file or {{train: FILE, val: FILE, test: FILE}} "
                             "(val / test optional: carved out of train)")
        self.files = {}
        for split, f in files.items():
            p = Path(str(f)).expanduser()
            key = f"data.path{'' if isinstance(path, str) else '.' + split}={str(f)!r}"
            if p.is_dir():
                inside = sorted(q.name for q in p.iterdir() if q.suffix.lower() in READERS)
                raise IsADirectoryError(f"{key} is a directory, not a data file: give one file"
                                        + (f" (it holds {', '.join(inside)})" if inside else "")
                                        + " or {train: FILE, val: FILE, test: FILE}")
            if not p.is_file():
                raise FileNotFoundError(f"{key}: no such file (relative paths are read from {Path.cwd()})")
            self.files[split] = p
        self._identity: dict | None = None

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = {split: sha256_file(p) for split, p in self.files.items()}
        return self._identity

    def sources(self) -> dict:
        return {split: (str(p), read_rows(p)) for split, p in self.files.items()}
