"""Real preference data from local files (SPEC §4): JSONL or Parquet rows in one of four formats, turned into the
schema's train/val/test splits (``datasets.Dataset``) and cached by the files' content hash + config.

Formats (``data.format``; null = detected from the first row's keys). ``data.columns`` maps the names below to a
file's own keys, e.g. ``{prompt: question}``.

- ``trl``: ``prompt``, ``chosen``, ``rejected`` strings, optional ``domain``. Also TRL's conversational form:
  ``chosen``/``rejected`` are lists of ``{role, content}`` messages whose last assistant message is the response;
  the prompt is a string, a message list, or -- TRL's "implicit prompt" -- the messages before that last answer.
- ``rewardbench``: ``prompt``, ``chosen``, ``rejected``, ``subset`` (-> domain).
- ``ranked`` (DMoERM's data, methods.md §2.3): ``src`` (user turns), optional ``tgt`` (the assistant turns between
  them), ``response`` (candidates), ``rank`` (one number per candidate), optional ``label`` (-> domain) -> every pair
  of candidates with unequal rank. ``data.better_rank`` says which rank wins; the default ``lower`` (rank 1 = best)
  is what DMoERM's training code and its capability labels use (its evaluation code reads ranks the other way
  round, a bug: methods.md §2.6 item 3).
- ``attributes`` (HelpSteer2, methods.md §7.2): one row per (``prompt``, ``response``) with ratings (default the
  five HelpSteer2 attributes, 0-4), optional ``domain`` -> every pair of responses to the same prompt whose overall
  score (``data.overall``: one attribute, default helpfulness, or weights per attribute) differs, the higher one
  chosen. The ratings become the capability columns ``cap_names`` / ``cap_chosen`` / ``cap_rejected`` (as in
  synthetic data), so DMoERM can learn one expert per attribute.

A malformed row is a ``DataFormatError`` naming the file, the line (JSONL, 1-based) or row index (Parquet, 0-based)
and what is wrong; nothing is skipped silently (a blank line is not a row). Real data has no gold reward, so
``world`` is None: accuracy is against the data's own labels, and BoN / PPO studies need data=synthetic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import numpy as np

from ..cache import ArtifactCache

log = logging.getLogger(__name__)

FORMATS = ("trl", "rewardbench", "ranked", "attributes")
SPLITS = ("train", "val", "test")
CONTEXTS = ("last_turn", "dialogue")
# Bump when the meaning of a converted row changes, so cached splits of the old conversion stop matching.
LOADER_VERSION = 1


class DataFormatError(ValueError):
    """A malformed data file or row. ``where`` is "FILE, line N", "FILE, row index N" or "FILE"."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


# ----------------------------------------------------------------------------------------------- reading rows
def read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for every row of a .jsonl or .parquet file, in file order."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path)
    elif suffix in (".parquet", ".pq"):
        yield from _parquet_rows(path)
    else:
        raise DataFormatError(str(path), f"unsupported file type {suffix!r}: use .jsonl (one JSON object per line) "
                                         "or .parquet")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}, line {lineno}"
            if not raw.strip():
                continue  # a blank line (or the newline ending the file) is not a row
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
                raise DataFormatError(where, f"expected a JSON object {{...}}, got {_kind(row)}")
            yield where, row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
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


# ------------------------------------------------------------------------------------- checking field values
def _kind(value) -> str:
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


def _text(value, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(where, f"{what} must be a string, got {_kind(value)}")
    if not value.strip():
        raise DataFormatError(where, f"{what} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataFormatError(where, f"{what} holds invalid Unicode (a lone surrogate escape)") from None
    return value


def _number(value, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = f" {value!r}" if isinstance(value, str) and len(value) < 40 else ""
        raise DataFormatError(where, f"{what} must be a number, got {_kind(value)}{shown}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise DataFormatError(where, f"{what} must be a finite number, got {value}")
    return x


def _list(value, what: str, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise DataFormatError(where, f"{what} must be a non-empty list, got {_kind(value)}")
    return value


def _domain(value, what: str, where: str) -> str:
    """An optional domain label: null / absent -> "" (unknown)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(where, f"{what} must be a string or null, got {_kind(value)}")
    return value


def _messages(value, what: str, where: str) -> list[tuple[str, str]]:
    """A conversation: a non-empty list of ``{"role": str, "content": str}`` -> [(role, content)]."""
    if not isinstance(value, list) or not value:
        raise DataFormatError(where, f"{what} must be a string or a non-empty list of {{role, content}} messages, "
                                     f"got {_kind(value)}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataFormatError(where, f"{what}[{i}] must be a {{role, content}} message, got {_kind(message)}")
        for key in ("role", "content"):
            if key not in message:
                raise DataFormatError(where, f"{what}[{i}] has no {key!r}; it has keys {sorted(message)}")
        if not isinstance(message["role"], str):
            raise DataFormatError(where, f"{what}[{i}].role must be a string, got {_kind(message['role'])}")
        out.append((message["role"], _text(message["content"], f"{what}[{i}].content", where)))
    return out


def _last_answer(messages: list[tuple[str, str]], what: str, where: str) -> tuple[str, int]:
    """The last assistant message's content and its position."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i][0] == "assistant":
            return messages[i][1], i
    raise DataFormatError(where, f"{what} has no assistant message")


# --------------------------------------------------------------------------------------------- the formats
class FormatOptions:
    """How rows become pairs: the format, the key mapping, and each format's knobs (see conf/data/jsonl.yaml)."""

    def __init__(self, format: str | None, columns: dict | None, context: str, better_rank: str, overall: str | dict,
                 attributes: list, attribute_range: list | None):
        columns = {} if columns is None else columns
        overall = {overall: 1.0} if isinstance(overall, str) else overall
        if format is not None and format not in FORMATS:
            raise ValueError(f"data.format={format!r}: valid choices are {list(FORMATS)} or null (detect)")
        if context not in CONTEXTS:
            raise ValueError(f"data.context={context!r}: valid choices are {list(CONTEXTS)}")
        if better_rank not in ("lower", "higher"):
            raise ValueError(f"data.better_rank={better_rank!r}: valid choices are ['lower', 'higher']")
        if (not isinstance(attributes, list) or not attributes or len(set(map(str, attributes))) != len(attributes)
                or not all(isinstance(a, str) and a for a in attributes)):
            raise ValueError(f"data.attributes={attributes!r} must be a non-empty list of distinct names")
        if not isinstance(overall, dict) or not overall:
            raise ValueError(f"data.overall={overall!r} must be an attribute name or weights per attribute, e.g. "
                             "{helpfulness: 1, correctness: 0.5}")
        for name, weight in overall.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"data.overall: {name!r} is not an attribute name")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"data.overall.{name}={weight!r} must be a finite number")
        if not any(overall.values()):
            raise ValueError(f"data.overall={overall!r}: at least one weight must be non-zero")
        if attribute_range is not None:
            ok = (isinstance(attribute_range, list) and len(attribute_range) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in attribute_range)
                  and attribute_range[0] < attribute_range[1])
            if not ok:
                raise ValueError(f"data.attribute_range={attribute_range!r} must be [low, high] with low < high, "
                                 "or null (any finite number)")
        known = {"prompt", "chosen", "rejected", "domain", "subset", "src", "tgt", "response", "rank", "label",
                 *attributes, *overall}
        if not isinstance(columns, dict) or not all(isinstance(v, str) and v for v in columns.values()):
            raise ValueError(f"data.columns={columns!r} must map field names to the file's keys, e.g. "
                             "{prompt: question}")
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(f"data.columns: unknown fields {unknown}; valid: {sorted(known)}")
        self.format, self.columns, self.context, self.better_rank = format, dict(columns), context, better_rank
        self.overall = {str(k): float(v) for k, v in overall.items()}
        self.attributes = list(attributes)
        self.attribute_range = None if attribute_range is None else [float(v) for v in attribute_range]

    def describe(self) -> dict:
        return dict(format=self.format, columns=self.columns, context=self.context, better_rank=self.better_rank,
                    overall=self.overall, attributes=self.attributes, attribute_range=self.attribute_range)

    def needs(self, fmt: str) -> list[str]:
        """The keys (after the mapping) a row must have to be read as ``fmt``."""
        fields = {"trl": ["chosen", "rejected"], "rewardbench": ["prompt", "chosen", "rejected", "subset"],
                  "ranked": ["src", "response", "rank"],
                  "attributes": ["prompt", "response", *dict.fromkeys(self.attributes + list(self.overall))]}[fmt]
        return [self.columns.get(f, f) for f in fields]

    def detect(self, row: dict, where: str) -> str:
        # Most specific first: a RewardBench row is also a TRL row.
        for fmt in ("ranked", "attributes", "rewardbench", "trl"):
            if set(self.needs(fmt)) <= set(row):
                return fmt
        wants = "; ".join(f"{fmt} needs {self.needs(fmt)}" for fmt in FORMATS)
        raise DataFormatError(where, f"cannot tell the data format from the first row's keys {sorted(row)} ({wants}). "
                                     "Set data.format, and map your keys with data.columns (e.g. "
                                     "data.columns={prompt: question})")


class Row:
    """One raw row read through ``data.columns``; a missing key is an error naming the row and the key."""

    def __init__(self, raw: dict, where: str, opts: FormatOptions):
        self.raw, self.where, self.opts = raw, where, opts

    def key(self, name: str) -> str:
        return self.opts.columns.get(name, name)

    def get(self, name: str, required: bool = True):
        """The value of field ``name``; an optional field that is absent or null reads as None."""
        key = self.key(name)
        if key not in self.raw:
            if not required:
                return None
            mapped = f" (data.columns.{name})" if key != name else ""
            raise DataFormatError(self.where, f"missing key {key!r}{mapped}; the row has keys {sorted(self.raw)}")
        return self.raw[key]


def _prompt_text(row: Row, messages: list[tuple[str, str]], what: str) -> str:
    """The prompt from a conversation: its last user turn, or every turn (``data.context``)."""
    users = [content for role, content in messages if role == "user"]
    if not users:
        raise DataFormatError(row.where, f"{what} has no user turn")
    return users[-1] if row.opts.context == "last_turn" else "\n".join(content for _, content in messages)


def trl_pair(row: Row) -> dict:
    """One pair from a TRL row (plain strings or conversational message lists)."""
    k_prompt, k_chosen, k_rejected = row.key("prompt"), row.key("chosen"), row.key("rejected")
    chosen_v, rejected_v = row.get("chosen"), row.get("rejected")
    conversational = isinstance(chosen_v, list)
    prompt_v = row.get("prompt", required=not conversational)  # conversational rows may carry it implicitly
    if conversational:
        chosen_msgs = _messages(chosen_v, repr(k_chosen), row.where)
        rejected_msgs = _messages(rejected_v, repr(k_rejected), row.where)
        chosen, at = _last_answer(chosen_msgs, repr(k_chosen), row.where)
        rejected, _ = _last_answer(rejected_msgs, repr(k_rejected), row.where)
        if prompt_v is None:
            prompt = _prompt_text(row, chosen_msgs[:at], f"{k_chosen!r} (before its last assistant message)")
    else:
        chosen, rejected = _text(chosen_v, repr(k_chosen), row.where), _text(rejected_v, repr(k_rejected), row.where)
    if prompt_v is not None or not conversational:  # a plain row's prompt must be there, and not null
        if isinstance(prompt_v, list):
            prompt = _prompt_text(row, _messages(prompt_v, repr(k_prompt), row.where), repr(k_prompt))
        else:
            prompt = _text(prompt_v, repr(k_prompt), row.where)
    domain = _domain(row.get("domain", required=False), repr(row.key("domain")), row.where)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "domain": domain}


def rewardbench_pair(row: Row) -> dict:
    pair = trl_pair(row)
    pair["domain"] = _text(row.get("subset"), repr(row.key("subset")), row.where)
    return pair


def ranked_pairs(row: Row) -> list[dict]:
    """Every pair of candidates of unequal rank, the better one chosen (``data.better_rank``)."""
    k_src, k_tgt, k_resp, k_rank = row.key("src"), row.key("tgt"), row.key("response"), row.key("rank")
    src = row.get("src")
    users = [_text(t, f"{k_src!r}[{i}]", row.where)
             for i, t in enumerate([src] if isinstance(src, str) else _list(src, repr(k_src), row.where))]
    tgt = row.get("tgt", required=False)
    tgt = [] if tgt is None else [tgt] if isinstance(tgt, str) else tgt
    if not isinstance(tgt, list):
        raise DataFormatError(row.where, f"{k_tgt!r} must be a list of assistant turns, got {_kind(tgt)}")
    answers = [_text(t, f"{k_tgt!r}[{i}]", row.where) for i, t in enumerate(tgt)]
    if len(answers) >= len(users):
        raise DataFormatError(row.where, f"{k_tgt!r} has {len(answers)} assistant turns for {len(users)} user turns "
                                         f"in {k_src!r}: expected fewer (the last user turn is the one answered)")
    responses = [_text(r, f"{k_resp!r}[{i}]", row.where)
                 for i, r in enumerate(_list(row.get("response"), repr(k_resp), row.where))]
    ranks = [_number(r, f"{k_rank!r}[{i}]", row.where)
             for i, r in enumerate(_list(row.get("rank"), repr(k_rank), row.where))]
    if len(ranks) != len(responses):
        raise DataFormatError(row.where, f"{k_rank!r} has {len(ranks)} entries for {len(responses)} responses")
    domain = _domain(row.get("label", required=False), repr(row.key("label")), row.where)
    if row.opts.context == "last_turn":
        prompt = users[-1]
    else:
        turns = [t for i, u in enumerate(users) for t in ([u, answers[i]] if i < len(answers) else [u])]
        prompt = "\n".join(turns)
    lower_wins = row.opts.better_rank == "lower"
    pairs = []
    for i in range(len(responses)):
        for j in range(i + 1, len(responses)):
            if ranks[i] == ranks[j]:
                continue  # a tie has no preferred response
            best, worst = (i, j) if (ranks[i] < ranks[j]) == lower_wins else (j, i)
            pairs.append({"prompt": prompt, "chosen": responses[best], "rejected": responses[worst], "domain": domain})
    return pairs


def attribute_rating(row: Row) -> dict:
    """One rated response: its prompt, text, domain, attribute values and overall score."""
    opts = row.opts
    ratings = {}
    for name in dict.fromkeys(opts.attributes + list(opts.overall)):
        key = row.key(name)
        value = _number(row.get(name), repr(key), row.where)
        bounds = opts.attribute_range
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise DataFormatError(row.where, f"{key!r}={value:g} is outside data.attribute_range={bounds}")
        ratings[name] = value
    return {"prompt": _text(row.get("prompt"), repr(row.key("prompt")), row.where),
            "response": _text(row.get("response"), repr(row.key("response")), row.where),
            "domain": _domain(row.get("domain", required=False), repr(row.key("domain")), row.where),
            "values": [ratings[a] for a in opts.attributes],
            "overall": sum(w * ratings[a] for a, w in opts.overall.items()), "where": row.where}


def attribute_pairs(rated: list[dict], opts: FormatOptions) -> list[dict]:
    """Every pair of responses to the same prompt with unequal overall score, the higher one chosen; the attribute
    values go to the capability columns."""
    by_prompt: dict[str, list[dict]] = {}
    for r in rated:
        group = by_prompt.setdefault(r["prompt"], [])
        if group and r["domain"] != group[0]["domain"]:
            raise DataFormatError(r["where"], f"domain {r['domain']!r} differs from {group[0]['domain']!r} of the "
                                              f"same prompt at {group[0]['where']}")
        group.append(r)
    pairs = []
    for group in by_prompt.values():
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                if a["overall"] == b["overall"]:
                    continue
                best, worst = (a, b) if a["overall"] > b["overall"] else (b, a)
                pairs.append({"prompt": a["prompt"], "chosen": best["response"], "rejected": worst["response"],
                              "domain": a["domain"], "cap_names": list(opts.attributes),
                              "cap_chosen": best["values"], "cap_rejected": worst["values"]})
    return pairs


def convert(rows: Iterable[tuple[str, dict]], source: str, opts: FormatOptions, fmt: str | None) -> tuple[str, dict]:
    """All rows of one source -> (format, columns of pairs). ``fmt`` None: detect it from the first row."""
    pairs: list[dict] = []
    rated: list[dict] = []
    n_rows = 0
    for where, raw in rows:
        if fmt is None:
            fmt = opts.detect(raw, where)
            log.info("%s: detected data.format=%s", source, fmt)
        row = Row(raw, where, opts)
        n_rows += 1
        if fmt == "trl":
            pairs.append(trl_pair(row))
        elif fmt == "rewardbench":
            pairs.append(rewardbench_pair(row))
        elif fmt == "ranked":
            pairs.extend(ranked_pairs(row))
        else:
            rated.append(attribute_rating(row))
    if fmt == "attributes":
        pairs = attribute_pairs(rated, opts)
    if not pairs:
        raise DataFormatError(source, f"no preference pairs in {n_rows} rows" + (
            "" if n_rows == 0 else " (no two responses to one prompt are rated differently)"))
    columns = {k: [p[k] for p in pairs] for k in pairs[0]}
    return fmt, columns


# ------------------------------------------------------------------------------------------ splitting
def split_by_prompt(cols: dict, fractions: dict[str, float], seed: int, source: str) -> dict[str, dict]:
    """Cut one source into the named parts by prompt -- every pair of a prompt lands in one part, so no test prompt
    is trained on -- in a seeded random order. Part sizes are fractions of the distinct prompts; every part but the
    first gets at least one prompt, the first (train) the rest. Pairs keep their file order within a part."""
    prompts = list(dict.fromkeys(cols["prompt"]))
    order = np.random.default_rng([seed, 50]).permutation(len(prompts))
    names, total = list(fractions), sum(fractions.values())
    counts = {n: max(1, round(fractions[n] / total * len(prompts))) for n in names[1:]}
    counts = {names[0]: len(prompts) - sum(counts.values()), **counts}
    if counts[names[0]] < 1:
        raise DataFormatError(source, f"{len(prompts)} distinct prompts are too few to split into {names} "
                                      f"(fractions {fractions}); give more data or one file per split")
    part_of, start = {}, 0
    for name in names:
        for i in order[start : start + counts[name]]:
            part_of[prompts[i]] = name
        start += counts[name]
    out = {}
    for name in names:
        keep = [i for i, p in enumerate(cols["prompt"]) if part_of[p] == name]
        out[name] = {k: [v[i] for i in keep] for k, v in cols.items()}
    return out


def assemble_splits(sources: dict[str, dict], fractions: dict[str, float], seed: int, source: str) -> dict:
    """train/val/test from the given sources; a split without its own source is carved out of train."""
    missing = [s for s in SPLITS if s not in sources]
    splits = dict(sources)
    if missing:
        parts = {"train": fractions["train"], **{s: fractions[s] for s in missing}}
        splits.update(split_by_prompt(sources["train"], parts, seed, source))
    return {s: splits[s] for s in SPLITS}


def check_fractions(fractions) -> dict[str, float]:
    if not isinstance(fractions, dict) or set(fractions) != set(SPLITS):
        raise ValueError(f"data.fractions={fractions!r} must give train, val and test, e.g. "
                         "{train: 0.8, val: 0.1, test: 0.1}")
    for name, v in fractions.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ValueError(f"data.fractions.{name}={v!r} must be a number > 0")
    return {s: float(fractions[s]) for s in SPLITS}


# ------------------------------------------------------------------------------------------ data sources
class PreferenceData:
    """What real data sources share (data=jsonl, data=hf): the interface of harness/data/synthetic.py without
    the world. Subclasses say where rows come from (``sources``) and what identifies their content (``identity``)."""

    name = "real"
    world = None  # no gold reward: accuracy is against the data's own labels; BoN / PPO need data=synthetic

    def __init__(self, format: str | None, columns: dict | None, fractions: dict, context: str, better_rank: str,
                 overall: str | dict, attributes: list, attribute_range: list | None):
        self.options = FormatOptions(format, columns, context, better_rank, overall, attributes, attribute_range)
        self.fractions = check_fractions(fractions)
        self.splits: dict[str, datasets.Dataset] = {}
        self.meta: dict = {}

    # -- what subclasses provide
    def identity(self) -> dict:
        """What the source's content is (content hashes), for cache keys."""
        raise NotImplementedError

    def sources(self) -> dict[str, tuple[str, Iterable[tuple[str, dict]]]]:
        """{split: (source name, rows)} for train and any of val / test the source has."""
        raise NotImplementedError

    # -- the data-source interface
    @property
    def domains(self) -> list[str]:
        return list(self.meta["domains"])

    def spec(self, seed: int) -> dict:
        return {"source": self.identity(), "options": self.options.describe(), "fractions": self.fractions,
                "loader": LOADER_VERSION, "seed": seed}

    def world_spec(self, seed: int) -> dict:
        # The tiny backbone pre-trains on this data's training text, so the whole spec determines it.
        return self.spec(seed)

    def prepare(self, cache: ArtifactCache, seed: int) -> PreferenceData:
        def build(out: Path) -> None:
            sources = self.sources()
            converted, fmt = {}, self.options.format
            for split in (s for s in SPLITS if s in sources):
                # The train source's format (given or detected) is every source's: splits must agree.
                source, rows = sources[split]
                fmt, converted[split] = convert(rows, source, self.options, fmt)
            splits = assemble_splits(converted, self.fractions, seed, sources["train"][0])
            domains = sorted({d for d in splits["train"]["domain"] if d})
            for split, cols in splits.items():
                datasets.Dataset.from_dict(cols).save_to_disk(str(out / split))
            meta = {"format": fmt, "domains": domains, "pairs": {s: len(c["prompt"]) for s, c in splits.items()},
                    "prompts": {s: len(set(c["prompt"])) for s, c in splits.items()}}
            (out / "meta.json").write_text(json.dumps(meta))

        path = cache.directory(f"{self.name}_data", self.spec(seed), build)
        self.meta = json.loads((path / "meta.json").read_text())
        self.splits = {s: datasets.load_from_disk(str(path / s)) for s in SPLITS}
        log.info("data=%s: format %s, pairs %s, domains %s", self.name, self.meta["format"], self.meta["pairs"],
                 self.meta["domains"])
        return self

    def corpus(self, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """``n`` (prompt, response) texts of the training split, for pre-training the tiny backbone: distinct
        (prompt, response) pairs drawn with the seed (with replacement when there are fewer than ``n``)."""
        train = self.splits["train"]
        prompts = list(train["prompt"])
        responses = list(train["chosen"]) + list(train["rejected"])
        texts = list(dict.fromkeys(zip(prompts + prompts, responses, strict=True)))
        idx = np.random.default_rng([seed, 20]).choice(len(texts), size=n, replace=n > len(texts))
        return [texts[i][0] for i in idx], [texts[i][1] for i in idx]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class JsonlData(PreferenceData):
    """Local .jsonl / .parquet preference files (conf/data/jsonl.yaml): one file, split by prompt with
    ``fractions``, or one per split."""

    name = "jsonl"

    def __init__(self, path: str | dict, format: str | None, columns: dict | None, fractions: dict, context: str,
                 better_rank: str, overall: str | dict, attributes: list, attribute_range: list | None):
        super().__init__(format, columns, fractions, context, better_rank, overall, attributes, attribute_range)
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
            if not p.is_file():
                raise FileNotFoundError(f"data.path{'' if isinstance(path, str) else '.' + split}={str(f)!r}: no "
                                        f"such file (relative paths are read from {Path.cwd()})")
            self.files[split] = p
        self._identity: dict | None = None

    def identity(self) -> dict:
        if self._identity is None:
            self._identity = {split: _sha256(p) for split, p in self.files.items()}
        return self._identity

    def sources(self) -> dict:
        return {split: (str(p), read_rows(p)) for split, p in self.files.items()}
