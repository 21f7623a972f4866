"""Real preference data (data=jsonl / data=hf): the four row formats, Parquet, column mapping, format detection,
seeded splits by prompt, caching, clear errors for malformed rows, and a job on real data."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CONF_DIR, TINY_BACKBONE, compose
from omegaconf import OmegaConf

from harness.cache import ArtifactCache
from harness.data.hf import HubUnavailableError
from harness.data.readers import DataFormatError
from harness.job import build, run_job

DATA = Path(__file__).parent / "data"


def load(cache_root: Path, group: str = "jsonl", seed: int = 0, **overrides):
    """A prepared data source from conf/data/<group>.yaml with ``overrides``, as a job builds it."""
    cfg = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR, "data", f"{group}.yaml")), overrides)
    return build(cfg, "data").prepare(ArtifactCache(cache_root), seed)


def pairs(data) -> set[tuple]:
    """Every (prompt, chosen, rejected, domain) of all splits."""
    return {(r["prompt"], r["chosen"], r["rejected"], r["domain"]) for s in ("train", "val", "test")
            for r in data.splits[s]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ the four formats
@pytest.mark.parametrize("name,fmt,n_pairs,domains", [
    ("trl.jsonl", "trl", 12, []),
    ("trl_conversational.jsonl", "trl", 10, []),
    ("rewardbench.jsonl", "rewardbench", 12,
     ["alpacaeval-easy", "hep-python", "mt-bench-med", "refusals-dangerous", "xstest-should-respond"]),
    # 12 ranked lists: 3+3+6+3+3+3+2 (one tie)+3+1+3+1+1 pairs of unequal rank
    ("ranked.jsonl", "ranked", 32, None),
    # 12 prompts with 2-3 rated responses: 3+1+3+1+3+1+3+1+3+3+1+1 pairs of unequal helpfulness
    ("attributes.jsonl", "attributes", 24, []),
    ("attributes.parquet", "attributes", 24, []),
])
def test_example_files_are_detected_and_expanded(tmp_path, name, fmt, n_pairs, domains):
    data = load(tmp_path, path=str(DATA / name))
    assert data.meta["format"] == fmt and data.world is None
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == n_pairs
    assert all(len(data.splits[s]) > 0 for s in ("train", "val", "test"))
    if domains is not None:
        assert data.domains == domains
    for s in ("train", "val", "test"):
        assert {"prompt", "chosen", "rejected", "domain"} <= set(data.splits[s].column_names)
        assert all(r["chosen"] != r["rejected"] for r in data.splits[s])


def test_ranked_lower_rank_wins_ties_dropped_and_labels_become_domains(tmp_path):
    lower = pairs(load(tmp_path, path=str(DATA / "ranked.jsonl")))
    gold = "What is the chemical symbol for gold?"
    best = "Au, from the Latin word aurum."
    gold_pairs = {(c, r) for p, c, r, _ in lower if p == gold}
    # ranks [2, 4, 3, 1]: rank 1 beats the three others, and so on down the list
    assert len(gold_pairs) == 6 and {c for c, r in gold_pairs if r == "It is Ag."} == {
        best, "The chemical symbol for gold is Au.", "Gold is shiny."}
    assert all(r != best for _, r in gold_pairs)
    # ranks [1, 2, 2]: the two tied responses are never paired
    wizard = {(c, r) for p, c, r, _ in lower if p.startswith("You are a wise old wizard")}
    assert wizard == {(c, r) for c, r in wizard if c.startswith("Patience")} and len(wizard) == 2
    assert {d for *_, d in lower} == {"chat", "roleplay", "obj_qa", "subj_qa", "text", "闲聊", ""}
    higher = pairs(load(tmp_path, path=str(DATA / "ranked.jsonl"), better_rank="higher"))
    assert higher == {(p, r, c, d) for p, c, r, d in lower}


def test_ranked_context_last_turn_or_dialogue(tmp_path):
    last = {p for p, *_ in pairs(load(tmp_path, path=str(DATA / "ranked.jsonl")))}
    dialogue = {p for p, *_ in pairs(load(tmp_path, path=str(DATA / "ranked.jsonl"), context="dialogue"))}
    assert "My boss criticised my report in front of everyone." in last
    assert ("I had a rough day at work.\nI'm sorry to hear that. What happened?\n"
            "My boss criticised my report in front of everyone.") in dialogue


def test_trl_conversational_prompt_from_user_turns(tmp_path):
    last = pairs(load(tmp_path, path=str(DATA / "trl_conversational.jsonl")))
    by_prompt = {p: (c, r) for p, c, r, _ in last}
    # implicit prompt: the messages before chosen's last assistant message; last_turn keeps the last user turn
    assert by_prompt["A park near a lake. What food should I bring?"][0].startswith("Sandwiches, fruit")
    # explicit prompt with a system message
    assert by_prompt["How long should I boil an egg for a runny yolk?"] == (
        "About six minutes in boiling water gives a runny yolk.", "Boil it for forty minutes.")
    assert by_prompt["Give me a tip for better sleep."][1] == "Drink three cups of coffee before bed."
    dialogue = {p for p, *_ in pairs(load(tmp_path, path=str(DATA / "trl_conversational.jsonl"),
                                          context="dialogue"))}
    assert ("Hi! Can you help me plan a picnic?\nOf course! Where would you like to go?\n"
            "A park near a lake. What food should I bring?") in dialogue
    assert "You are a helpful cooking assistant.\nHow long should I boil an egg for a runny yolk?" in dialogue


def test_attributes_pairs_capabilities_and_overall_weights(tmp_path):
    data = load(tmp_path, path=str(DATA / "attributes.jsonl"))
    rows = [r for s in ("train", "val", "test") for r in data.splits[s]]
    sky = [r for r in rows if r["prompt"] == "Explain why the sky is blue."]
    # helpfulness 4, 1, 2 -> three pairs, the more helpful one chosen, all five ratings kept per side
    assert len(sky) == 3 and all(r["cap_chosen"][0] > r["cap_rejected"][0] for r in sky)
    assert all(r["cap_names"] == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"] for r in rows)
    ocean = next(r for r in sky if r["rejected"] == "Because the ocean reflects onto it.")
    assert ocean["cap_rejected"] == [1.0, 0.0, 3.0, 0.0, 1.0]
    # by coherence alone many responses tie and form no pair: 2+1+2+1+2+1+2+1+2+2+1+0
    coherent = pairs(load(tmp_path, path=str(DATA / "attributes.jsonl"), overall={"coherence": 1.0}))
    sky_coherent = {(c, r) for p, c, r, _ in coherent if p == "Explain why the sky is blue."}
    assert len(coherent) == 17 and len(sky_coherent) == 2  # coherence 4, 3, 4: the two 4s tie
    assert all(r == "Because the ocean reflects onto it." for _, r in sky_coherent)


def test_parquet_reads_like_jsonl(tmp_path):
    assert pairs(load(tmp_path, path=str(DATA / "attributes.parquet"))) == pairs(
        load(tmp_path, path=str(DATA / "attributes.jsonl")))
    rows = [json.loads(line) for line in (DATA / "rewardbench.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rb.parquet")
    a, b = load(tmp_path, path=str(tmp_path / "rb.parquet")), load(tmp_path, path=str(DATA / "rewardbench.jsonl"))
    assert a.meta["format"] == "rewardbench"
    assert all(a.splits[s].to_dict() == b.splits[s].to_dict() for s in ("train", "val", "test"))


def test_column_mapping(tmp_path):
    rows = [{"question": f"question number {i}", "good": f"good answer {i}", "bad": f"bad answer {i}",
             "category": "math" if i % 2 else "chat"} for i in range(20)]
    f = write_jsonl(tmp_path / "mapped.jsonl", rows)
    data = load(tmp_path, path=str(f), columns={"prompt": "question", "chosen": "good", "rejected": "bad",
                                                "domain": "category"})
    assert data.meta["format"] == "trl" and data.domains == ["chat", "math"]
    assert ("question number 3", "good answer 3", "bad answer 3", "math") in pairs(data)
    with pytest.raises(DataFormatError, match=r"mapped.jsonl, line 1: missing key 'best' \(data.columns.chosen\)"):
        load(tmp_path, path=str(f), format="trl", columns={"chosen": "best"})
    with pytest.raises(ValueError, match="data.columns: unknown fields"):
        load(tmp_path, path=str(f), columns={"promt": "question"})


def test_undetectable_format_names_file_and_keys(tmp_path):
    f = write_jsonl(tmp_path / "odd.jsonl", [{"q": "a question", "a": "an answer"}])
    with pytest.raises(DataFormatError) as e:
        load(tmp_path, path=str(f))
    assert "odd.jsonl, line 1" in str(e.value) and "['a', 'q']" in str(e.value) and "data.format" in str(e.value)


# ------------------------------------------------------------------------------------------ splits and cache
def _many(tmp_path, n=50) -> Path:
    return write_jsonl(tmp_path / "many.jsonl", [{"prompt": f"prompt {i // 2}", "chosen": f"yes {i}",
                                                 "rejected": f"no {i}"} for i in range(2 * n)])


def test_split_is_by_prompt_seeded_and_sized(tmp_path):
    f = _many(tmp_path)
    a = load(tmp_path, path=str(f), fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    prompts = {s: set(a.splits[s]["prompt"]) for s in ("train", "val", "test")}
    assert [len(prompts[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert not (prompts["train"] & prompts["val"] or prompts["train"] & prompts["test"]
                or prompts["val"] & prompts["test"])
    again = load(tmp_path, path=str(f), fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    assert all(again.splits[s].to_dict() == a.splits[s].to_dict() for s in prompts)
    other = load(tmp_path, seed=1, path=str(f), fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    assert set(other.splits["test"]["prompt"]) != prompts["test"]


def test_one_file_per_split_and_val_carved_from_train(tmp_path):
    f = _many(tmp_path)
    test_file = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "held out", "chosen": "a", "rejected": "b"}])
    data = load(tmp_path, path={"train": str(f), "test": str(test_file)})
    assert list(data.splits["test"]["prompt"]) == ["held out"]
    assert len(set(data.splits["val"]["prompt"])) == 6  # 0.1 / (0.8 + 0.1) of 50 prompts
    assert len(data.splits["train"]) + len(data.splits["val"]) == 100


def test_too_few_prompts_to_split(tmp_path):
    f = write_jsonl(tmp_path / "two.jsonl", [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(2)])
    with pytest.raises(DataFormatError, match="two.jsonl: 2 distinct prompts are too few"):
        load(tmp_path, path=str(f))


def test_cache_is_keyed_by_content(tmp_path):
    f = _many(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    cfg = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR, "data", "jsonl.yaml")), {"path": str(f)})
    build(cfg, "data").prepare(cache, 0)
    build(cfg, "data").prepare(cache, 0)
    assert cache.stats == {"hits": 1, "builds": 1}
    write_jsonl(f, [{"prompt": f"new {i}", "chosen": "a", "rejected": "b"} for i in range(10)])
    data = build(cfg, "data").prepare(cache, 0)
    assert cache.stats["builds"] == 2 and data.splits["train"][0]["prompt"].startswith("new")


def test_corpus_is_training_text_drawn_with_the_seed(tmp_path):
    data = load(tmp_path, path=str(DATA / "rewardbench.jsonl"))
    prompts, responses = data.corpus(200, seed=0)
    train = set(zip(list(data.splits["train"]["prompt"]) * 2,
                    list(data.splits["train"]["chosen"]) + list(data.splits["train"]["rejected"]), strict=True))
    assert len(prompts) == 200 and set(zip(prompts, responses, strict=True)) == train  # all 20 drawn, nothing else
    assert data.corpus(200, seed=0) == (prompts, responses) and data.corpus(200, seed=1) != (prompts, responses)


# ------------------------------------------------------------------------------------------ malformed input
GOOD = '{"prompt": "p", "chosen": "a", "rejected": "b"}'
RANKED = '{"src": ["q"], "response": ["a", "b"], "rank": [1, 2]}'
ATTR = '{"prompt": "p", "response": "a", "helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1, ' \
       '"verbosity": 1}'


@pytest.mark.parametrize("fmt,good,bad,problem", [
    ("trl", GOOD, b'{"prompt": "p", "chosen": "a", ', "not valid JSON"),
    ("trl", GOOD, b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}', "not UTF-8"),
    ("trl", GOOD, b'["p", "a", "b"]', "expected a JSON object"),
    ("trl", GOOD, b'{"prompt": "p", "chosen": "a"}', "missing key 'rejected'"),
    ("trl", GOOD, b'{"prompt": "p", "chosen": 3, "rejected": "b"}', "'chosen' must be a string, got a number"),
    ("trl", GOOD, b'{"prompt": "  ", "chosen": "a", "rejected": "b"}', "'prompt' is empty"),
    ("trl", GOOD, b'{"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": '
                  b'"assistant", "content": "y"}]}', "'chosen' has no assistant message"),
    ("rewardbench", GOOD[:-1] + ', "subset": "s"}', b'{"prompt": "p", "chosen": "a", "rejected": "b", "subset": 1}',
     "'subset' must be a string"),
    ("ranked", RANKED, b'{"src": ["q"], "response": ["a", "b"], "rank": [1, "two"]}',
     "'rank'[1] must be a number, got a string 'two'"),
    ("ranked", RANKED, b'{"src": ["q"], "response": ["a", "b"], "rank": [1]}', "'rank' has 1 entries for 2"),
    ("ranked", RANKED, b'{"src": ["q"], "response": ["a", "b"], "rank": [1, NaN]}', "finite number"),
    ("ranked", RANKED, b'{"src": [], "response": ["a", "b"], "rank": [1, 2]}', "'src' must be a non-empty list"),
    ("attributes", ATTR, ATTR.replace('"verbosity": 1', '"verbosity": 7').encode(), "outside data.attribute_range"),
    ("attributes", ATTR, ATTR.replace('"helpfulness": 1', '"helpfulness": true').encode(),
     "'helpfulness' must be a number, got a boolean"),
])
def test_malformed_row_names_file_and_line(tmp_path, fmt, good, bad, problem):
    f = tmp_path / "bad.jsonl"
    f.write_bytes((good + "\n" + good + "\n\n").encode() + bad + b"\n" + good.encode() + b"\n")
    with pytest.raises(DataFormatError) as e:
        load(tmp_path, path=str(f), format=fmt)
    assert "bad.jsonl, line 4: " in str(e.value) and problem in str(e.value)


def test_bad_files(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataFormatError, match="garbage.parquet: not a readable Parquet file"):
        load(tmp_path, path=str(garbage))
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3 + [{"prompt": "p", "chosen": None, "rejected": "b"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nulls.parquet")
    with pytest.raises(DataFormatError, match=r"nulls.parquet, row index 3: 'chosen' must be a string, got null"):
        load(tmp_path, path=str(tmp_path / "nulls.parquet"))
    (tmp_path / "data.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(DataFormatError, match="data.csv: unsupported file type '.csv'"):
        load(tmp_path, path=str(tmp_path / "data.csv"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataFormatError, match="empty.jsonl: no preference pairs in 0 rows"):
        load(tmp_path, path=str(tmp_path / "empty.jsonl"))
    with pytest.raises(ValueError, match="data.path='nowhere.jsonl': no such file"):
        load(tmp_path, path="nowhere.jsonl")


@pytest.mark.parametrize("override,key", [({"format": "csv"}, "data.format"), ({"better_rank": "best"},
                                          "data.better_rank"), ({"context": "all"}, "data.context"),
                                          ({"fractions": {"train": 1, "val": 0, "test": 0}}, "data.fractions.val"),
                                          ({"overall": {"helpfulness": 0}}, "data.overall"),
                                          ({"drop_identical": "yes"}, "data.drop_identical"),
                                          ({"max_field_chars": 0}, "data.max_field_chars"),
                                          ({"unknown_knob": 1}, "unknown_knob")])
def test_bad_options_name_the_key(tmp_path, override, key):
    with pytest.raises(ValueError, match=key):
        load(tmp_path, path=str(DATA / "trl.jsonl"), **override)


# ------------------------------------------------------------------------------------------ hub data sets
def test_hf_offline_is_a_clear_error(tmp_path):
    assert datasets.config.HF_HUB_OFFLINE, "tests run with HF_DATASETS_OFFLINE=1 (conftest)"
    with pytest.raises(HubUnavailableError) as e:
        load(tmp_path, group="hf", name="rmharness-tests/no-such-data")
    msg = str(e.value)
    assert "data.name='rmharness-tests/no-such-data'" in msg and "offline" in msg and "data=jsonl" in msg


def test_hf_builder_with_local_files_reads_like_jsonl(tmp_path):
    hub = load(tmp_path, group="hf", name="json", data_files=str(DATA / "ranked.jsonl"))
    local = load(tmp_path, path=str(DATA / "ranked.jsonl"))
    assert hub.meta["format"] == "ranked" and pairs(hub) == pairs(local)
    with pytest.raises(ValueError, match="split 'validation'"):
        load(tmp_path, group="hf", name="json", data_files=str(DATA / "ranked.jsonl"),
             splits={"train": "train", "test": "validation"})


# ------------------------------------------------------------------------------------------ jobs on real data
def test_tiny_tokenizer_learns_the_data_words(tmp_path):
    from harness.backbones import TinyBackbone

    data = load(tmp_path, path=str(DATA / "trl.jsonl"))
    spec = {**TINY_BACKBONE, "pretrain_steps": 1}
    cache = ArtifactCache(tmp_path / "cache")
    known = TinyBackbone(**spec, extra_vocab=1000).prepare(cache, lambda n: data.corpus(n, 0), 0, data.world_spec(0))
    world_only = TinyBackbone(**spec).prepare(cache, lambda n: data.corpus(n, 0), 0, data.world_spec(0))
    unk = known.tokenizer.unk_token_id
    text = " ".join(data.splits["train"]["chosen"])  # every training word is in the corpus
    assert unk not in known.tokenizer(text)["input_ids"]
    assert world_only.tokenizer(text)["input_ids"].count(unk) > len(text.split()) // 4


def test_real_data_with_the_default_studies_skips_them_with_one_line(tmp_path, caplog):
    # The simplest real-data command: no opt=none. Best-of-N needs a gold reward, which a preference file lacks.
    overrides = ["data=jsonl", f"data.path={DATA / 'trl.jsonl'}", f"cache_dir={tmp_path}/cache",
                 "backbone.hidden_size=32", "backbone.intermediate_size=64", "backbone.pretrain_steps=2",
                 "backbone.pretrain_sequences=50", "train.epochs=1", "train.evals_per_epoch=1", "threads=1",
                 "export=false"]
    cfg = compose(overrides)
    assert list(cfg.opt) == ["bon"]
    with caplog.at_level("INFO", logger="harness"):
        metrics = run_job(cfg, tmp_path / "job", {}, overrides)
    assert metrics["status"] == "ok", metrics["error"]
    assert metrics["opt_skipped"] == ["bon"] and "bon" not in metrics and "accuracy" in metrics
    assert metrics["threads"] == 1
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 1 and "no gold reward" in said[0] and "gold=rm" in said[0], said
    assert not (tmp_path / "cache" / "policy_tiny").exists()  # the policy was never trained for it
    assert (tmp_path / "job" / "curves.csv").exists()


def test_job_on_attribute_ratings_reports_accuracy_against_the_labels(tmp_path):
    overrides = ["data=jsonl", f"data.path={DATA / 'attributes.jsonl'}", "opt=none", f"cache_dir={tmp_path}/cache",
                 "backbone.hidden_size=32", "backbone.intermediate_size=64", "backbone.pretrain_steps=20",
                 "backbone.pretrain_sequences=200", "train.epochs=1", "train.evals_per_epoch=1", "threads=1"]
    metrics = run_job(compose(overrides), tmp_path / "job", {}, overrides)
    assert metrics["status"] == "ok", metrics["error"]
    assert set(metrics["accuracy"]) == {"human"} and metrics["accuracy"]["human"]["n"] == 1
    assert 0.0 <= metrics["accuracy"]["human"]["overall"] <= 1.0
    assert metrics["params"]["total"] > 0 and (tmp_path / "job" / "metrics.json").exists()
