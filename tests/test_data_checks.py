"""Nothing silently wrong with real data (issue 21 items 4, 5, 8, 9): truncation keeps the response and reports what
it did, degenerate pairs are refused naming their row, huge fields cost bounded work, and misleading messages say
what is really wrong."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from conftest import CONF_DIR, compose
from omegaconf import OmegaConf

from harness.accuracy import preference_accuracy
from harness.backbones import PretrainedBackbone, TinyBackbone
from harness.cache import ArtifactCache
from harness.data.readers import DataFormatError
from harness.data.schema import MAX_CHARS_PER_TOKEN, drop_identical_inputs, encode_pairs, input_report
from harness.job import build, run_job
from harness.world import build_tokenizer

WORDS = [f"w{i}" for i in range(200)]


def load(tmp_path: Path, **overrides):
    """A prepared data=jsonl source with ``overrides``, as a job builds it."""
    cfg = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR, "data", "jsonl.yaml")), overrides)
    return build(cfg, "data").prepare(ArtifactCache(tmp_path / "cache"), 0)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def join(prompt: str, response: str) -> str:
    return f"{prompt} => {response}"


def long_prompt_pairs(n: int, prompt_words: int) -> datasets.Dataset:
    """Pairs whose prompts are ``prompt_words`` long and whose responses differ in their first word."""
    prompts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(prompt_words)) for i in range(n)]
    return datasets.Dataset.from_dict({"prompt": prompts, "chosen": [f"good w{i} w1 w2" for i in range(n)],
                                       "rejected": [f"bad w{i} w1 w2" for i in range(n)], "domain": [""] * n})


# ------------------------------------------------------------------------------ 4: truncation keeps the response
def test_truncation_cuts_the_prompt_and_keeps_the_response():
    tok = build_tokenizer(["good", "bad", *WORDS])
    pairs = encode_pairs(long_prompt_pairs(6, prompt_words=150), tok, join, [], max_length=96)
    for side, first_word in ((pairs.chosen, "good"), (pairs.rejected, "bad")):
        assert (side.lengths == 96).all() and side.truncated.all()
        for i in range(len(side)):
            text = tok.decode(side.ids[i, : side.lengths[i]])
            # the prompt's end, the join, the whole response
            assert text.endswith(f"=> {first_word} w{i} w1 w2") and text.startswith("w")
    report = input_report(pairs, "train", 96)
    assert report == {"pairs": 6, "truncated": 6, "identical": 0, "identical_after_truncation": 0}
    short = encode_pairs(long_prompt_pairs(6, prompt_words=10), tok, join, [], max_length=96)
    assert not short.chosen.truncated.any() and input_report(short, "train", 96)["truncated"] == 0


def test_a_response_longer_than_max_length_is_cut_at_its_end_and_identical_pairs_are_found():
    tok = build_tokenizer(["good", "bad", *WORDS])
    shared = " ".join(WORDS[:120])  # the first 120 words of both responses are the same
    cols = {"prompt": ["w1 w2 w3", "w4 w5"], "chosen": [shared + " good", "good"],
            "rejected": [shared + " bad", "bad"], "domain": ["", ""]}
    pairs = encode_pairs(datasets.Dataset.from_dict(cols), tok, join, [], max_length=96)
    first = tok.decode(pairs.chosen.ids[0, : pairs.chosen.lengths[0]])
    assert first.startswith("=> w0 w1") and pairs.chosen.lengths[0] == 96  # no prompt left; response start kept
    assert input_report(pairs, "train", 96) == {"pairs": 2, "truncated": 1, "identical": 1,
                                                "identical_after_truncation": 1}
    kept, dataset, dropped = drop_identical_inputs(pairs, datasets.Dataset.from_dict(cols), 96)
    assert dropped == 1 and len(kept) == 1 and dataset["chosen"] == ["good"]  # the raw split stays row-aligned
    assert torch.equal(kept.chosen.ids[0], pairs.chosen.ids[1])


def test_ties_count_wrong():
    acc = preference_accuracy([1.0, 2.0, 0.5], [1.0, 1.0, 0.5], ["", "", ""], [2.0, 2.0, 1.0], [1.0, 1.0, 0.0])
    assert acc["human"]["overall"] == pytest.approx(1 / 3) and acc["gold"]["overall"] == pytest.approx(1 / 3)


def test_job_reports_truncation_and_leaves_identical_inputs_out_of_training(tmp_path):
    rows = [{"prompt": " ".join(WORDS[i % 50 : i % 50 + 120]), "chosen": f"good answer {i}",
             "rejected": f"bad answer {i}"} for i in range(40)]
    # Responses that differ only after max_length tokens: identical inputs however the prompt is cut.
    rows += [{"prompt": f"short {i}", "chosen": " ".join(WORDS[:100]) + " good",
              "rejected": " ".join(WORDS[:100]) + " bad"} for i in range(20)]
    f = write_jsonl(tmp_path / "long.jsonl", rows)
    overrides = ["data=jsonl", f"data.path={f}", "opt=none", f"cache_dir={tmp_path}/cache", "threads=1",
                 "backbone.hidden_size=32", "backbone.intermediate_size=64", "backbone.pretrain_steps=5",
                 "backbone.pretrain_sequences=100", "train.epochs=1", "train.evals_per_epoch=1"]
    metrics = run_job(compose(overrides), tmp_path / "job", {}, overrides)
    assert metrics["status"] == "ok", metrics["error"]
    data = metrics["data"]
    assert sum(data[s]["pairs"] for s in ("train", "val", "test")) == 60
    assert sum(data[s]["truncated"] for s in ("train", "val", "test")) == 60
    assert sum(data[s]["identical_after_truncation"] for s in ("train", "val", "test")) == 20
    assert data["train"]["dropped"] == data["train"]["identical"] > 0
    assert json.loads((tmp_path / "job" / "metrics.json").read_text())["data"] == data
    assert metrics["accuracy"]["human"]["n"] == data["test"]["pairs"]  # evaluation keeps them (ties count wrong)


# ------------------------------------------------------------------------------ 5: degenerate pairs
GOOD = [{"prompt": f"p{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(10)]


def test_identical_chosen_and_rejected_is_an_error_naming_the_line_or_dropped_and_counted(tmp_path):
    f = write_jsonl(tmp_path / "same.jsonl", GOOD[:3] + [{"prompt": "p", "chosen": "same", "rejected": "same"}]
                    + GOOD[3:])
    with pytest.raises(DataFormatError, match=r"same.jsonl, line 4: the chosen and the rejected response are the "
                                              r"same text.*data.drop_identical=true"):
        load(tmp_path, path=str(f))
    data = load(tmp_path, path=str(f), drop_identical=True)
    assert data.meta["dropped_identical"] == 1 and sum(data.meta["pairs"].values()) == 10


def test_identical_candidates_of_ranked_and_attribute_rows_are_errors(tmp_path):
    ranked = write_jsonl(tmp_path / "ranked.jsonl", [{"src": ["q"], "response": ["a", "b", "a"], "rank": [1, 2, 3]}])
    with pytest.raises(DataFormatError, match="ranked.jsonl, line 1: the chosen and the rejected response are"):
        load(tmp_path, path=str(ranked))
    rating = {"helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1, "verbosity": 1}
    rows = [{"prompt": "q", "response": "a", **rating}, {"prompt": "r", "response": "b", **rating},
            {"prompt": "q", "response": "a", **rating, "helpfulness": 3}]
    attributes = write_jsonl(tmp_path / "attributes.jsonl", rows)
    with pytest.raises(DataFormatError, match="attributes.jsonl, line 1 and line 3: the chosen and the rejected"):
        load(tmp_path, path=str(attributes))


def conversation(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_conversations_that_differ_before_the_last_answer_are_an_error(tmp_path):
    rows = [{"chosen": conversation(f"q{i}", "a"), "rejected": conversation(f"q{i}", "b")} for i in range(6)]
    rows.insert(2, {"chosen": conversation("q", "a"), "rejected": conversation("another q", "b")})
    f = write_jsonl(tmp_path / "conv.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"conv.jsonl, line 3: 'chosen' and 'rejected' differ before their "
                                              r"last assistant message \(at message 0\)"):
        load(tmp_path, path=str(f))


# ------------------------------------------------------------------------------ 8: huge fields
def test_a_field_over_max_field_chars_is_an_error_naming_the_line(tmp_path):
    f = write_jsonl(tmp_path / "huge.jsonl", GOOD[:4] + [{"prompt": "p", "chosen": "x " * 600, "rejected": "no"}])
    with pytest.raises(DataFormatError, match=r"huge.jsonl, line 5: the chosen text is 1,200 characters long, more "
                                              r"than data.max_field_chars=1,000"):
        load(tmp_path, path=str(f), max_field_chars=1000)
    assert sum(load(tmp_path, path=str(f), max_field_chars=None).meta["pairs"].values()) == 5


class RecordingTokenizer:
    """A tokenizer that remembers the longest text it was asked to tokenize."""

    def __init__(self, tok):
        self.tok, self.longest = tok, 0

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, *(len(t) for t in ([text] if isinstance(text, str) else text)))
        return self.tok(text, **kwargs)


def test_tokenizing_a_huge_field_reads_a_bounded_number_of_characters():
    tok = RecordingTokenizer(build_tokenizer(["good", "bad", *WORDS]))
    huge = " ".join(WORDS) * 2000  # ~1 MB
    cols = {"prompt": [huge, "w1"], "chosen": ["good", huge], "rejected": ["bad", "bad"], "domain": ["", ""]}
    pairs = encode_pairs(datasets.Dataset.from_dict(cols), tok, join, [], max_length=96)
    bound = 96 * MAX_CHARS_PER_TOKEN
    assert tok.longest <= 2 * bound + len(" => ")
    assert pairs.chosen.truncated.all() and (pairs.chosen.lengths == 96).all()
    assert tok.tok.decode(pairs.chosen.ids[0, : pairs.chosen.lengths[0]]).endswith("=> good")


def test_backbone_pretraining_corpus_is_cut_before_tokenizing(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def capture(tok, texts, *args, **kwargs):
        seen["texts"] = texts
        raise Stop

    monkeypatch.setattr("harness.backbones.pretrain_causal_lm", capture)
    huge = "w1 " * 500_000
    spec = dict(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, max_length=96, pretrain_steps=1,
                pretrain_batch_size=4, pretrain_lr=1e-3, pretrain_sequences=8, lora_targets=["q_proj"],
                pretrain_weight_decay=0.0, pretrain_warmup=0.05, pretrain_max_grad_norm=1.0, pretrain_log_every=200)
    with pytest.raises(Stop):
        TinyBackbone(**spec).prepare(ArtifactCache(tmp_path), lambda n: ([huge] * n, ["w2 " * 10] * n), 0, {})
    assert max(map(len, seen["texts"])) <= 2 * 96 * MAX_CHARS_PER_TOKEN + len(" => ")


# ------------------------------------------------------------------------------ 9: messages that say what is wrong
def test_empty_backbone_directory_names_the_key(tmp_path):
    (tmp_path / "model").mkdir()
    backbone = PretrainedBackbone(name="hf", path=str(tmp_path / "model"))
    with pytest.raises(FileNotFoundError, match=r"backbone.path='.*model': the directory .* has no model/tokenizer "
                                                r"files: it lacks config.json and a tokenizer file.*it holds nothing"):
        backbone.prepare(ArtifactCache(tmp_path / "cache"), None, 0)
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"lacks a tokenizer file \(tokenizer.json.*it holds config.json"):
        backbone.prepare(ArtifactCache(tmp_path / "cache"), None, 0)


def test_a_directory_as_data_path_says_so(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", GOOD)
    with pytest.raises(ValueError, match=rf"data.path='{tmp_path}' is a directory, not a data file: give one file "
                                         r"\(it holds train.jsonl\)"):
        load(tmp_path, path=str(tmp_path))


@pytest.mark.parametrize("chosen,rejected,problem", [
    (conversation("q", "a"), "b", "'chosen' is a conversation (a list of messages) but 'rejected' is a string"),
    ("a", conversation("q", "b"), "'chosen' is a string but 'rejected' is a conversation (a list of messages)"),
])
def test_a_mixed_conversational_row_says_which_side_is_which(tmp_path, chosen, rejected, problem):
    f = write_jsonl(tmp_path / "mixed.jsonl", [*GOOD[:2], {"prompt": "q", "chosen": chosen, "rejected": rejected}])
    with pytest.raises(DataFormatError) as e:
        load(tmp_path, path=str(f))
    assert str(e.value).startswith(f"{f}, line 3: {problem}")
