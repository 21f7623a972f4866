"""Property tests (hypothesis): malformed data files and bad config values always give the harness's own clear
error -- a ValueError subclass naming the file and line, or the config key -- never another exception type from
deep inside a library."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONF_DIR, TINY_TRAIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from harness.archs.base import TrainConfig
from harness.cache import ArtifactCache
from harness.data.jsonl import JsonlData
from harness.data.readers import DataFormatError
from harness.world import WorldConfig

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
DEFAULTS = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR, "data", "jsonl.yaml")))
DEFAULTS.pop("_target_")


def prepare(path: Path, fmt: str | None, root: Path):
    return JsonlData(**{**DEFAULTS, "path": str(path), "format": fmt}).prepare(ArtifactCache(root / "cache"), 0)


# ------------------------------------------------------------------------------------------ rows
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(lambda s: s.strip())
rating = st.integers(0, 4)
# A valid row states a preference: chosen != rejected, ranked candidates distinct.
valid_row = {
    "trl": st.fixed_dictionaries({"prompt": text, "chosen": text, "rejected": text}).filter(
        lambda r: r["chosen"] != r["rejected"]),
    "rewardbench": st.fixed_dictionaries({"prompt": text, "chosen": text, "rejected": text, "subset": text}).filter(
        lambda r: r["chosen"] != r["rejected"]),
    "ranked": st.integers(2, 4).flatmap(lambda n: st.fixed_dictionaries({
        "src": st.lists(text, min_size=1, max_size=2), "response": st.lists(text, min_size=n, max_size=n, unique=True),
        "rank": st.lists(st.integers(1, 4), min_size=n, max_size=n), "label": text})),
    "attributes": st.fixed_dictionaries({"prompt": text, "response": text, **{a: rating for a in ATTRIBUTES}}),
}
# Which fields must be present, and which values are wrong for them (never a value the loader may accept).
REQUIRED = {"trl": ["prompt", "chosen", "rejected"], "rewardbench": ["prompt", "chosen", "rejected", "subset"],
            "ranked": ["src", "response", "rank"], "attributes": ["prompt", "response", *ATTRIBUTES]}
not_text = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
not_number = st.one_of(st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
                       st.floats(allow_nan=True).filter(lambda x: not math.isfinite(x)))
# Scalars that are not finite numbers (a list of numbers may be a valid rank list, so it is not used for ranks).
not_number_scalar = st.one_of(st.text(max_size=5), st.booleans(), st.none(),
                              st.floats(allow_nan=True).filter(lambda x: not math.isfinite(x)))
not_text_list = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.just([]),
                          st.lists(not_text.filter(lambda v: v is not None), min_size=1, max_size=2))
wrong_value = {
    **{f: not_text for f in ("prompt", "chosen", "rejected", "subset", "response")},
    "src": not_text_list,
    "rank": st.one_of(not_number_scalar, st.integers(), st.floats(), st.lists(not_number_scalar, min_size=1)),
    **{a: st.one_of(not_number, st.integers(5, 10**6), st.integers(-10**6, -1), st.floats(4.01, 1e9))
       for a in ATTRIBUTES},
}
# Never valid UTF-8, wherever inserted.
BAD_BYTES = st.sampled_from([b"\xc0", b"\xc1", b"\xf5", b"\xfe", b"\xff"])


@st.composite
def bad_line(draw, fmt: str) -> bytes:
    """One line that is wrong for ``fmt`` in a random way."""
    row = draw(valid_row[fmt])
    how = draw(st.sampled_from(["missing", "wrong_type", "empty", "garbage", "not_utf8", "not_object", "rank_len"]))
    if how == "missing":
        for key in draw(st.lists(st.sampled_from(REQUIRED[fmt]), min_size=1, unique=True)):
            del row[key]
    elif how == "wrong_type":
        key = draw(st.sampled_from(REQUIRED[fmt]))
        row[key] = draw(wrong_value[key])
    elif how == "empty":
        key = draw(st.sampled_from([k for k in REQUIRED[fmt] if k not in ATTRIBUTES + ["rank"]]))
        blank = draw(st.sampled_from(["", " ", "\t\n"]))
        row[key] = [blank] if isinstance(row[key], list) else blank
    elif how == "garbage":
        return draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b.strip()))
    elif how == "not_utf8":
        line = json.dumps(row, ensure_ascii=False).encode()
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(BAD_BYTES) + line[at:]
    elif how == "not_object":
        return json.dumps(list(row.values())).encode()
    elif how == "rank_len":
        if fmt != "ranked":
            del row[REQUIRED[fmt][0]]
        else:
            row["rank"] = row["rank"][:-1] if draw(st.booleans()) else row["rank"] + [1]
    return json.dumps(row, ensure_ascii=False).encode()


@st.composite
def malformed_file(draw):
    """(format, file bytes, 1-based line of the bad row, whether to pass the format or detect it)."""
    fmt = draw(st.sampled_from(list(valid_row)))
    lines = []
    for _ in range(draw(st.integers(0, 3))):  # valid rows (and blank lines, which are not rows) before it
        lines.append(json.dumps(draw(valid_row[fmt]), ensure_ascii=False).encode() if draw(st.booleans()) else b"")
    bad_at = len(lines) + 1
    lines.append(draw(bad_line(fmt)))
    lines += [json.dumps(draw(valid_row[fmt]), ensure_ascii=False).encode() for _ in range(draw(st.integers(0, 2)))]
    # Detection reads the first row: a corrupted first row may be another format's valid row, so detect only
    # when a valid row comes first.
    detect = any(lines[: bad_at - 1]) and draw(st.booleans())
    return fmt, b"\n".join(lines) + b"\n", bad_at, detect


@PROPERTY
@given(malformed_file())
def test_malformed_jsonl_is_a_clear_error_naming_file_and_line(case):
    fmt, content, bad_at, detect = case
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "prefs.jsonl"
        f.write_bytes(content)
        with pytest.raises(DataFormatError) as e:
            prepare(f, None if detect else fmt, Path(tmp))
    assert f"prefs.jsonl, line {bad_at}: " in str(e.value), (str(e.value), content)


@PROPERTY
@given(fmt=st.sampled_from(["trl", "rewardbench", "attributes"]), data=st.data())
def test_parquet_nulls_are_a_clear_error_naming_file_and_row(fmt, data):
    rows = data.draw(st.lists(valid_row[fmt], min_size=1, max_size=5))
    index = data.draw(st.integers(0, len(rows) - 1))
    for key in data.draw(st.lists(st.sampled_from(REQUIRED[fmt]), min_size=1, unique=True)):
        rows[index][key] = None
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "prefs.parquet"
        pq.write_table(pa.Table.from_pylist(rows), f)
        with pytest.raises(DataFormatError) as e:
            prepare(f, fmt, Path(tmp))
    assert f"prefs.parquet, row index {index}: " in str(e.value)


@PROPERTY
@given(junk=st.binary(max_size=200))
def test_garbage_parquet_file_is_a_clear_error(junk):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "prefs.parquet"
        f.write_bytes(junk)
        with pytest.raises(DataFormatError, match="prefs.parquet"):
            prepare(f, None, Path(tmp))


# ------------------------------------------------------------------------------------------ config values
garbage_value = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
BAD_TRAIN = {
    "lr": st.one_of(garbage_value, non_finite, st.floats(max_value=0.0, allow_nan=False)),
    "weight_decay": st.one_of(garbage_value, non_finite, st.floats(max_value=-1e-9, allow_nan=False)),
    "warmup": st.one_of(garbage_value, non_finite, st.floats(max_value=-1e-9, allow_nan=False),
                        st.floats(min_value=1.0, allow_nan=False)),
    "max_grad_norm": st.one_of(garbage_value, non_finite, st.floats(max_value=0.0, allow_nan=False)),
    **{k: st.one_of(garbage_value, st.integers(max_value=0), st.floats(allow_nan=True))
       for k in ("batch_size", "epochs", "evals_per_epoch", "patience", "bucket_chunks")},
}


@PROPERTY
@given(data=st.data(), key=st.sampled_from(sorted(BAD_TRAIN)))
def test_bad_train_values_name_the_key(data, key):
    value = data.draw(BAD_TRAIN[key])
    with pytest.raises(ValueError, match=f"train.{key}="):
        TrainConfig(**{**TINY_TRAIN, key: value}).validate()


RANGES = {"marker_rate": (0, 1), "domain_topic_rate": (0, 1), "exploit_rate": (0, 0.2), "human_agreement": (0.5, 1),
          "human_flip_rate": (0, 0.5), "judge_position_bias": (0, 1), "unnamed_share": (0, 0.9),
          "corpus_exploit_rate": (0, 0.2), "judge_agreement": (0.5, 1)}
BAD_WORLD = {
    **{k: st.one_of(garbage_value, non_finite, st.floats(max_value=lo - 1e-6, allow_nan=False),
                    st.floats(min_value=hi + 1e-6, allow_nan=False)) for k, (lo, hi) in RANGES.items()},
    "judge_agreement_per_point": st.one_of(st.integers(), st.text(max_size=3), st.just({"nope": 0.8}),
                                           st.just({"relevance": 1.5}), st.just({"fluency": "high"})),
    "max_words": st.one_of(garbage_value, st.integers(max_value=7), st.floats(allow_nan=True)),
    "calibration_pairs": st.one_of(garbage_value, st.integers(max_value=0), st.floats(allow_nan=True)),
    "domains": st.one_of(st.text(max_size=5), st.none(), st.integers(),
                         st.lists(st.sampled_from(["chitchat", "roleplay", "nope", "", 3]), max_size=4).filter(
                             lambda ds: len(ds) < 2 or len(set(map(str, ds))) < len(ds)
                             or any(d not in ("chitchat", "roleplay") for d in ds))),
}


@PROPERTY
@given(data=st.data(), key=st.sampled_from(sorted(BAD_WORLD)))
def test_bad_world_values_name_the_key(data, key):
    value = data.draw(BAD_WORLD[key])
    with pytest.raises(ValueError, match=f"data.world.{key}"):
        WorldConfig(**{key: value}).validate()


BAD_DATA = {
    "format": st.one_of(st.text(max_size=8).filter(lambda s: s not in ("trl", "rewardbench", "ranked",
                                                                        "attributes")), st.integers()),
    "context": st.one_of(st.text(max_size=8).filter(lambda s: s not in ("last_turn", "dialogue")), st.none()),
    "better_rank": st.one_of(st.text(max_size=8).filter(lambda s: s not in ("lower", "higher")), st.none()),
    "fractions": st.one_of(garbage_value, st.fixed_dictionaries(
        {"train": st.floats(0.1, 1), "val": st.one_of(garbage_value, non_finite, st.floats(max_value=0.0)),
         "test": st.floats(0.1, 1)})),
    "overall": st.one_of(st.just(""), st.just({}), st.integers(), st.dictionaries(
        st.sampled_from(ATTRIBUTES), st.one_of(garbage_value, non_finite), min_size=1)),
    "attributes": st.one_of(st.just([]), st.text(max_size=5), st.lists(st.integers(), min_size=1, max_size=2),
                            st.just(["helpfulness", "helpfulness"])),
    "attribute_range": st.one_of(st.just([4, 0]), st.just([1]), st.text(max_size=3), st.lists(garbage_value,
                                                                                               min_size=2, max_size=2)),
    "drop_identical": st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    "max_field_chars": st.one_of(st.integers(max_value=0), st.booleans(), st.floats(), st.text(max_size=5)),
    "columns": st.one_of(st.dictionaries(st.sampled_from(["promt", "answer", "x"]), st.just("q"), min_size=1),
                         st.dictionaries(st.just("prompt"), st.one_of(st.integers(), st.just("")), min_size=1),
                         st.integers(), st.text(min_size=1, max_size=3)),
}


@PROPERTY
@given(data=st.data(), key=st.sampled_from(sorted(BAD_DATA)))
def test_bad_data_options_name_the_key(data, key):
    value = data.draw(BAD_DATA[key])
    with pytest.raises(ValueError, match=f"data.{key}"):
        JsonlData(**{**DEFAULTS, "path": str(Path(__file__).parent / "data" / "trl.jsonl"), key: value})
