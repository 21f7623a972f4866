"""The RLHF data-set formats: Anthropic HH transcripts, UltraFeedback-binarized, HelpSteer3 preference --
detected, converted (ties dropped and counted in the log, margins kept), file:line errors; and an RM trained on
each loads back with identical scores and answers over HTTP and through the TRL callable."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, TINY_BACKBONE, TINY_TRAIN, compose, post_json, serving
from omegaconf import OmegaConf

from harness.cache import ArtifactCache
from harness.data.readers import DataFormatError
from harness.job import build

DATA = Path(__file__).parent / "data"
SPLITS = ("train", "val", "test")
H, A = "\n\nHuman: ", "\n\nAssistant: "


def load(cache_root: Path, **overrides):
    """A prepared data=jsonl source with ``overrides``, as a job builds it."""
    cfg = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR, "data", "jsonl.yaml")), overrides)
    return build(cfg, "data").prepare(ArtifactCache(cache_root), 0)


def rows(data) -> list[dict]:
    return [r for s in SPLITS for r in data.splits[s]]


@pytest.mark.parametrize("name, fmt, n_pairs, domains, dropped", [
    ("hh.jsonl", "hh", 7, [], "1 pairs dropped: chosen and rejected are the same response"),
    ("ultrafeedback.jsonl", "ultrafeedback", 7, [], "1 ties dropped (score_chosen == score_rejected)"),
    ("helpsteer3.jsonl", "helpsteer3", 7, ["code", "general", "multilingual", "stem"],
     "1 of 8 rows are ties (overall_preference 0): dropped"),
])
def test_detected_converted_and_ties_counted_in_the_log(tmp_path, caplog, name, fmt, n_pairs, domains, dropped):
    with caplog.at_level(logging.INFO):
        data = load(tmp_path, path=str(DATA / name))
    assert data.meta["format"] == fmt and len(rows(data)) == n_pairs
    assert sorted({r["domain"] for r in rows(data)} - {""}) == domains
    assert dropped in caplog.text
    assert all(r["chosen"] != r["rejected"] and r["prompt"].strip() for r in rows(data))
    assert load(tmp_path / "given", path=str(DATA / name), format=fmt).meta["pairs"] == data.meta["pairs"]


def test_hh_prompt_is_the_shared_conversation(tmp_path):
    last = {r["prompt"]: r for r in rows(load(tmp_path, path=str(DATA / "hh.jsonl")))}
    bread = last["Yes, I have dry yeast."]  # last_turn: the last Human turn
    assert bread["chosen"].startswith("Great: mix flour") and bread["rejected"] == "Bread is sold in shops."
    dialogue = {r["prompt"] for r in rows(load(tmp_path / "d", path=str(DATA / "hh.jsonl"), context="dialogue"))}
    # dialogue: the shared prefix through the last "Assistant:", as written
    assert ("Human: Can you help me bake bread?\n\nAssistant: Sure! Do you have yeast?\n\nHuman: Yes, I have dry "
            "yeast.\n\nAssistant:") in dialogue


def test_ultrafeedback_keeps_the_score_margin(tmp_path):
    by_prompt = {r["prompt"]: r for r in rows(load(tmp_path, path=str(DATA / "ultrafeedback.jsonl")))}
    haiku = by_prompt["Write a haiku about rain."]
    assert haiku["chosen"].startswith("Soft rain") and haiku["rejected"] == "Rain is wet." and haiku["margin"] == 5.5
    assert by_prompt["Translate 'good morning' to Spanish."]["margin"] == 8.0


def test_helpsteer3_preference_sign_and_context(tmp_path):
    by_prompt = {r["prompt"]: r for r in rows(load(tmp_path, path=str(DATA / "helpsteer3.jsonl")))}
    run = by_prompt["Not very. How should I begin?"]  # -3: response1 much better
    assert run["chosen"].startswith("Start with run-walk") and run["margin"] == 3 and run["domain"] == "general"
    derivative = by_prompt["What is the derivative of x squared?"]  # +2: response2 better
    assert derivative["chosen"] == "The derivative of x^2 is 2x." and derivative["rejected"] == "It is x."
    dialogue = {r["prompt"] for r in rows(load(tmp_path / "d", path=str(DATA / "helpsteer3.jsonl"),
                                               context="dialogue"))}
    assert "I want to start running.\nGreat! How fit are you now?\nNot very. How should I begin?" in dialogue


def hh_row(chosen_answer="Paris.", rejected_answer="Lyon.", prefix=H + "Capital of France?" + A):
    return {"chosen": prefix + chosen_answer, "rejected": prefix + rejected_answer}


def uf_row(**overrides):
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    bad = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]
    return {"prompt": "q", "chosen": conv, "rejected": bad, "score_chosen": 8, "score_rejected": 3, **overrides}


def hs3_row(**overrides):
    return {"context": [{"role": "user", "content": "q"}], "response1": "a", "response2": "b",
            "overall_preference": -1, **overrides}


@pytest.mark.parametrize("bad, fmt, message", [
    ({**hh_row(), "rejected": H + "Capital of Spain?" + A + "Madrid."}, None, "differ before their last"),
    ({"chosen": H + "hi" + A + "x", "rejected": "no transcript here"}, None, "'rejected' is not an HH transcript"),
    ({"chosen": "plain text", "rejected": "x"}, "hh", "'chosen' is not an HH transcript"),
    (uf_row(score_chosen=2), None, "'score_chosen'=2 is below 'score_rejected'=3"),
    (uf_row(score_rejected="high"), None, "'score_rejected' must be a number"),
    (hs3_row(overall_preference=5), None, "'overall_preference'=5 must be an integer in -3..3"),
    (hs3_row(overall_preference=1.5), None, "'overall_preference'=1.5 must be an integer"),
    (hs3_row(context="q"), None, "'context' must be a string or a non-empty list"),
    (hs3_row(response2=""), None, "'response2' is empty"),
])
def test_malformed_rows_name_file_and_line(tmp_path, bad, fmt, message):
    good = {"hh": hh_row(), "ultrafeedback": uf_row(), "helpsteer3": hs3_row()}
    kind = "hh" if "rejected" in bad and "score_chosen" not in bad and "context" not in bad else (
        "ultrafeedback" if "score_chosen" in bad else "helpsteer3")
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good[kind], good[kind], bad)))
    with pytest.raises(DataFormatError, match=message) as err:
        load(tmp_path, path=str(path), **({"format": fmt} if fmt else {}))
    assert f"{path}, line 3" in str(err.value) or (fmt and f"{path}, line 1" in str(err.value))


@pytest.mark.parametrize("name", ["hh.jsonl", "ultrafeedback.jsonl", "helpsteer3.jsonl"])
def test_rm_trained_on_each_format_loads_back_serves_and_rewards_trl(tmp_path, name):
    """The issue's acceptance, offline: train on the format, export, load back with the same scores, answer over
    HTTP (OpenRLHF protocol) and through the TRL reward callable."""
    from harness.archs.base import FitContext, TrainConfig
    from harness.backbones import TinyBackbone
    from harness.data.schema import encode_pairs
    from harness.export import export_reward_model, load_reward_model, trl_reward_func

    cache = ArtifactCache(tmp_path / "cache")
    data = load(tmp_path / "cache", path=str(DATA / name), fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    backbone = TinyBackbone(**{**TINY_BACKBONE, "extra_vocab": 500}).prepare(
        cache, lambda n: data.corpus(n, 0), 0, data.world_spec(0))
    train, val = (encode_pairs(data.splits[s], backbone.tokenizer, backbone.join, data.domains, backbone.max_length)
                  for s in ("train", "val"))
    cfg = compose(["arch=single"])
    rm = build(cfg.arch, "arch")
    rm.fit(train, val, FitContext(backbone=backbone, train=TrainConfig(**TINY_TRAIN), cache=cache, seed=0,
                                  domains=data.domains, data_spec=data.spec(0)))
    export_reward_model(rm, backbone, cfg.arch, tmp_path / "rm", domains=data.domains, seed=0)
    loaded = load_reward_model(tmp_path / "rm")
    for split in SPLITS:  # every split, encoded and scored as a job scores its test split
        ds = data.splits[split]
        enc = encode_pairs(ds, backbone.tokenizer, backbone.join, data.domains, backbone.max_length)
        for side, seqs in (("chosen", enc.chosen), ("rejected", enc.rejected)):
            assert torch.equal(loaded.score(ds["prompt"], ds[side]), rm.score(seqs)), (split, side)
    prompts, responses = [r["prompt"] for r in rows(data)], [r["chosen"] for r in rows(data)]
    expected = loaded.score(prompts, responses).tolist()
    assert trl_reward_func(loaded)(prompts=prompts, completions=responses) == expected
    with serving(loaded) as url:
        queries = [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)]
        status, body = post_json(f"{url}/get_reward", {"query": queries, "prompts": prompts})
    assert status == 200 and body["rewards"] == pytest.approx(expected, abs=1e-6)
