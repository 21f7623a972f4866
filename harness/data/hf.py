"""Preference data sets from the Hugging Face hub by name (SPEC §4), read with ``datasets.load_dataset`` and
turned into the schema's splits by the same row formats as local files (harness/data/formats/) and the same
splitting and caching (harness/data/source.py).

The hub may be unreachable (this machine, CI) or switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``): a data
set already in the local datasets cache still loads; any other is a ``HubUnavailableError`` that names
``data.name`` and points to ``data=jsonl`` for a local file.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets

from .options import FormatOptions
from .source import SPLITS, PreferenceData


class HubUnavailableError(ConnectionError):
    """The hub cannot be reached (offline mode or no network) and the data set is not cached locally."""


class HFData(PreferenceData):
    """A hub data set (conf/data/hf.yaml). ``name`` is the hub id (``data.name``); ``self.name`` stays "hf"."""

    name = "hf"

    def __init__(self, name: str, config: str | None, revision: str | None, data_files, splits: dict,
                 format: str | None, columns: dict | None, fractions: dict, context: str, better_rank: str,
                 overall: str | dict, attributes: list, attribute_range: list | None, drop_identical: bool,
                 max_field_chars: int | None):
        super().__init__(FormatOptions(format=format, columns=columns, context=context, better_rank=better_rank,
                                       overall=overall, attributes=attributes, attribute_range=attribute_range,
                                       drop_identical=drop_identical, max_field_chars=max_field_chars),
                         fractions)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"data.name={name!r} must be a hub data set id, e.g. nvidia/HelpSteer2")
        if not isinstance(splits, dict) or not set(splits) <= set(SPLITS) or not splits.get("train"):
            raise ValueError(f"data.splits={splits!r} must map train (required), val and test to the data set's "
                             "split names (null = carved out of train)")
        self.dataset_name, self.config, self.revision, self.data_files = name, config, revision, data_files
        self.hub_splits = {s: str(h) for s, h in splits.items() if h}
        self._loaded: dict[str, datasets.Dataset] = {}

    def _load(self, split: str) -> datasets.Dataset:
        if split in self._loaded:
            return self._loaded[split]
        hub_split = self.hub_splits[split]
        where = f"data.name={self.dataset_name!r} (config {self.config!r}, split {hub_split!r})"
        try:
            ds = datasets.load_dataset(self.dataset_name, self.config, split=hub_split, revision=self.revision,
                                       data_files=self.data_files)
        except ConnectionError as e:
            raise HubUnavailableError(
                f"data.name={self.dataset_name!r}: the Hugging Face hub is unreachable or offline mode is on "
                "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), and the data set is not in the local datasets cache. "
                "Download it where the hub is reachable, or export it to a file and use data=jsonl "
                f"data.path=FILE. ({e})"
            ) from None
        except datasets.exceptions.DatasetNotFoundError as e:
            raise FileNotFoundError(f"{where}: not found ({e})") from None
        except (ValueError, FileNotFoundError, KeyError) as e:  # unknown config / split names, missing files
            raise ValueError(f"{where}: {type(e).__name__}: {e}") from None
        self._loaded[split] = ds
        return ds

    def identity(self) -> dict:
        # datasets fingerprints each loaded split from its source files: the content's identity.
        return {"name": self.dataset_name, "config": self.config, "revision": self.revision,
                "data_files": self.data_files, "splits": self.hub_splits,
                "fingerprints": {s: self._load(s)._fingerprint for s in self.hub_splits}}

    def sources(self) -> dict:
        def rows(split: str, source: str) -> Iterator[tuple[str, dict]]:
            for i, row in enumerate(self._load(split)):
                yield f"{source}, row index {i}", row

        out = {}
        for split, hub_split in self.hub_splits.items():
            source = f"hub data set {self.dataset_name!r} split {hub_split!r}"
            out[split] = (source, rows(split, source))
        return out
