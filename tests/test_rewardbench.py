"""RewardBench / RewardBench 2 evaluation on local files, against hand-computed numbers (a word-count "RM")."""

import json

import pytest
import torch
from conftest import CONF_DIR

from harness.data.readers import DataFormatError
from harness.rewardbench import benchmark_entries, check_benchmarks, evaluate_benchmark, section_scores

DATA = __import__("pathlib").Path(CONF_DIR).parent / "tests" / "data"


class WordCount:
    """reward = number of words of the response: every expected number below follows by hand."""

    def score(self, prompts, responses):
        assert len(prompts) == len(responses)
        return torch.tensor([float(len(r.split())) for r in responses])


def test_rewardbench_subsets_sections_and_weighted_score():
    out = evaluate_benchmark(WordCount(), DATA / "rewardbench_eval.jsonl")
    assert out["format"] == "rewardbench" and out["n"] == 9
    acc = {name: s["accuracy"] for name, s in out["subsets"].items()}
    # The 2-vs-2 alpacaeval pair is a tie: wrong.
    assert acc == {"alpacaeval-easy": 0.5, "mt-bench-easy": 1.0, "llmbar-natural": 0.0, "refusals-dangerous": 1.0,
                   "hep-python": 0.5, "shp": 1.0, "my-own-subset": 0.0}
    assert out["accuracy"] == pytest.approx(5 / 9)
    chat = (0.5 * 100 + 1.0 * 28) / (100 + 28)  # EXAMPLE_COUNTS weights
    assert out["sections"] == pytest.approx({"Chat": chat, "Chat Hard": 0.0, "Safety": 1.0, "Reasoning": 0.5,
                                             "Prior Sets": 1.0})
    assert out["score"] == pytest.approx((2 * chat + 2 * 0.0 + 2 * 1.0 + 2 * 0.5 + 1 * 1.0) / 9)


def test_section_score_uses_only_the_sections_present():
    out = section_scores({"hep-go": 1.0, "math-prm": 0.0})
    assert out["sections"] == {"Reasoning": pytest.approx(164 / (164 + 984))}
    assert out["score"] == out["sections"]["Reasoning"]
    assert section_scores({"unknown": 1.0}) == {"sections": {}, "score": None}


def test_rewardbench2_best_of_n_and_the_ties_rule():
    out = evaluate_benchmark(WordCount(), DATA / "rewardbench2.jsonl")
    assert out["format"] == "rewardbench2" and out["n"] == 7
    subsets = out["subsets"]
    assert subsets["Factuality"] == {"accuracy": 0.5, "n": 2}
    assert subsets["Focus"] == {"accuracy": 0.0, "n": 1}  # the chosen ties a rejected at the top: wrong
    ties = subsets["Ties"]
    assert ties["accuracy"] == 0.75 and ties["n"] == 4
    assert ties["ref_accuracy"] == 0.5 and ties["tied_accuracy"] == 1.0
    assert ties["correctness_preferred"] == 1.0 and ties["correctness_preferred_hard"] == 0.0
    assert ties["correctness_margin"] == pytest.approx(-0.5)  # tanh(0) and tanh(-inf)
    assert ties["score"] == pytest.approx(0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 1.0 + 0.2 * 0.0 + 0.01 * -0.5)
    assert out["accuracy"] == pytest.approx(4 / 7)
    assert out["score"] == pytest.approx((0.5 + 0.0 + ties["score"]) / 3)


def test_ties_without_ref_tied_ids_is_plain_accuracy(tmp_path):
    rows = [{"prompt": "q", "chosen": ["a b"], "rejected": ["a"], "subset": "Ties", "id": 7}]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = evaluate_benchmark(WordCount(), path)
    assert out["subsets"]["Ties"] == {"accuracy": 1.0, "n": 1} and out["score"] == 1.0


def test_format_given_explicitly_and_detected_alike(tmp_path):
    a = evaluate_benchmark(WordCount(), DATA / "rewardbench2.jsonl", "rewardbench2")
    assert a == evaluate_benchmark(WordCount(), DATA / "rewardbench2.jsonl")


@pytest.mark.parametrize("lines, fmt, message", [
    (['{"prompt": "q", "chosen": ["a"], "rejected": ["b"]}', '{"prompt": "q", "chosen": "a", "rejected": ["b"]}'],
     None, "line 2: chosen must be a non-empty list"),
    (['{"prompt": "q", "chosen": "a"}'], None, "line 1: rewardbench row has no 'rejected'"),
    (['{"prompt": "", "chosen": "a", "rejected": "b"}'], None, "line 1: prompt must be a non-empty string"),
    (['{"prompt": "q", "chosen": "a", "rejected": "b", "subset": 3}'], None, "line 1: subset must be a string"),
    (['{"prompt": "q", "rejected": "b"}'], None, "line 1: cannot detect the format"),
    (['{"prompt": "q", "chosen": "a", "rejected": "b"}', 'not json'], None, "line 2: not valid JSON"),
    (['{"prompt": "q", "chosen": "a", "rejected": "b"}'], "rewardbench2", "line 1: chosen must be a non-empty list"),
])
def test_malformed_rows_name_file_and_line(tmp_path, lines, fmt, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=message) as err:
        evaluate_benchmark(WordCount(), path, fmt)
    assert str(path) in str(err.value)


def test_entries_are_checked_before_anything_runs(tmp_path):
    assert [(n, f) for n, _, f in benchmark_entries(
        [str(DATA / "rewardbench2.jsonl"), {"path": str(DATA / "rewardbench2.jsonl"), "format": "rewardbench2"}])] \
        == [("rewardbench2", None), ("rewardbench2_2", "rewardbench2")]
    with pytest.raises(FileNotFoundError, match="eval.benchmarks: .*missing.jsonl is not a file"):
        check_benchmarks([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ValueError, match="format 'rb3'"):
        check_benchmarks([{"path": str(DATA / "rewardbench2.jsonl"), "format": "rb3"}])
    with pytest.raises(ValueError, match=r"eval.benchmarks\[0\]"):
        check_benchmarks([{"file": "x"}])
