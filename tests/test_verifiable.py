"""gold=verifier (issue 28): the task families' verifiers on hand-written answers, the task set, the pairs the
verdicts become (label noise, length preference, format pairs), the oracle's exact capability labels, and a job
on a scripted policy whose right / wrong / bare answers are known; the real SmolLM2 path is the slow test."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, compose
from hydra.utils import instantiate

from harness.gold import VERIFIER_POINTS, VerifierData, VerifierGold, verifier_pairs
from harness.job import run_job
from harness.labelers.oracle import OracleLabeler
from harness.optimize.study import gold_units, pass_rate_curve
from harness.verifiable.tasks import (
    TASK_SPLITS,
    Addition,
    Comparison,
    Conversion,
    Counting,
    Multiplication,
    Task,
    Uppercase,
    Verdict,
    draw_tasks,
    extract_number,
)

FAMILIES = {"add": Addition(1, 20, 2), "multiply": Multiplication(9, 9, 2), "compare": Comparison(1, 99, 2),
            "count": Counting(2, 5, 2), "convert": Conversion(5, 2), "uppercase": Uppercase(1, 2)}
COUNTS = {"train": 6, "val": 2, "test": 3, "eval": 4}

# (family, question, answer, [(response, correct, formatted)]): hand-written answers per family.
CASES = [
    (Addition(1, 20, 0), "What is 23 + 45?", "68", [
        ("68", True, True), ("68.", True, True), (" **68** ", True, True), ("A: 68", True, True),
        ("23 + 45 = 68", True, False),
        ("The answer is 68. Adding the tens gives 60", True, False), ("68\nbecause 20 + 40 = 60", True, False),
        ("There are 68", True, False), ("23 + 45 = 70", False, False), ("67", False, True),
        ("I cannot add numbers.", False, False), ("", False, False), ("68.5", False, True)]),
    (Multiplication(9, 9, 0), "What is 7 * 8?", "56", [
        ("56", True, True), ("7 * 8 = 56, which is the sum of 7 and 8.", True, False), ("7 * 8 equals 56", True, False),
        ("7 * 8 = 54", False, False), ("fifty-six", False, False), ("1,056", False, True)]),
    (Comparison(1, 99, 0), "Which is larger, 47 or 52?", "52", [
        ("52", True, True), ("'52'", True, True), ("The answer is 52", True, False), ("47", False, True),
        ("The larger one is 47.", False, False)]),
    (Counting(2, 5, 0), "How many words are in this list: cat, sun, cup?", "3", [
        ("3", True, True), ("Three.", True, True), ("three", True, True), ("There are 3 words.", True, False),
        ("4", False, True), ("There are three words.", False, False)]),
    (Conversion(5, 0), "How many minutes are in 3 hours?", "180", [
        ("180", True, True), ("180.0", True, True), ("3 hours = 180 minutes", True, False), ("1,80", False, False),
        ("3 * 60 = 120", False, False), ("There are 60 minutes in an hour", False, False)]),
    (Uppercase(1, 0), "Write 'river' in capital letters.", "RIVER", [
        ("RIVER", True, True), ("RIVER.", True, True), ("'RIVER'", True, True), ("A: RIVER", True, True),
        ("The word is RIVER.", True, False),
        ("RIVER\nIt means a stream.", True, False), ("River", False, True), ("river", False, True),
        ("RIVERS", False, True), ("I will write it: ROVER", False, False), ("", False, False)]),
]


@pytest.mark.parametrize("family,question,answer,answers", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_verifier_marks_hand_written_answers(family, question, answer, answers):
    task = Task(family="f", question=question, prompt=question, answer=answer)
    for response, correct, formatted in answers:
        verdict = family.verify(task, response)
        assert (verdict.correct, verdict.formatted) == (correct, formatted), (response, verdict)


def test_number_extraction_rules_in_order():
    assert extract_number("twelve") == ("twelve", True)  # a bare number word
    assert extract_number("The answer: 7 and later 9") == ("7", False)  # the first marked number
    assert extract_number("I counted 3 then 4 then 5") == ("5", False)  # else the last number
    assert extract_number("one of them") == (None, False)  # number words only as a bare answer


def test_each_family_draws_questions_it_verifies_right():
    rng = np.random.default_rng(0)
    for name, family in FAMILIES.items():
        for _ in range(50):
            task = family.make(name, rng)
            assert task.prompt.startswith(family.instruction) and task.prompt.endswith(f"Q: {task.question}\nA:")
            assert task.prompt.count("\nA: ") == family.shots  # the worked examples carry their answers
            assert family.verify(task, task.answer).correct and family.verify(task, task.answer).formatted


def test_task_set_is_seeded_disjoint_and_keeps_held_out_prompts_when_train_grows():
    tasks = draw_tasks(FAMILIES, COUNTS, seed=0)
    assert {s: len(tasks[s]) for s in TASK_SPLITS} == {s: COUNTS[s] * len(FAMILIES) for s in TASK_SPLITS}
    questions = [(t.family, t.question) for s in TASK_SPLITS for t in tasks[s]]
    assert len(set(questions)) == len(questions)
    assert tasks == draw_tasks(FAMILIES, COUNTS, seed=0)
    assert tasks["eval"] != draw_tasks(FAMILIES, COUNTS, seed=1)["eval"]
    grown = draw_tasks(FAMILIES, {**COUNTS, "train": 12}, seed=0)
    assert grown["eval"] == tasks["eval"] and grown["test"] == tasks["test"]
    with pytest.raises(ValueError, match="too few distinct questions"):
        draw_tasks({"compare": Comparison(1, 3, 0)}, COUNTS, seed=0)


def _verdicts(pattern: list[tuple[bool, bool]]) -> list[Verdict]:
    return [Verdict(correct=c, formatted=f, extracted=None) for c, f in pattern]


def _fake_tasks(n: int) -> list[Task]:
    return [Task(family="add", question=f"q{i}", prompt=f"prompt {i}", answer="1") for i in range(n)]


def test_pairs_put_right_against_wrong_then_bare_against_not():
    tasks = _fake_tasks(3)
    responses = [["a1", "bb2", "c3", "dddd4"], ["e", "ff", "ggg", "hhhh"], ["i", "jj", "kkk", "llll"]]
    verdicts = [_verdicts([(True, True), (False, True), (True, True), (False, False)]),  # 2 right, 2 wrong
                _verdicts([(True, True), (True, True), (True, False), (True, False)]),  # all right, 2 bare
                _verdicts([(False, True), (False, False), (False, True), (False, False)])]  # all wrong, 2 bare
    cols, stats = verifier_pairs(tasks, responses, verdicts, pairs_per_prompt=3, format_pairs=True, label_noise=0.0,
                                 length_share=0.0, rng=np.random.default_rng(0))
    # Prompt 0: two right-wrong pairs and nothing left; prompts 1 and 2: two bare-vs-not pairs each, within equal
    # correctness. No label noise: chosen is the verifier's better one, and gold is correctness.
    assert stats["pairs"] == 6 and stats["format_pairs"] == 4 and stats["prompts_with_pairs"] == 3
    assert stats["label_verifier_agreement"] == 1.0 and stats["pass_rate"] == 0.5
    for c, gc, gr, vc, vr in zip(cols["chosen"], cols["gold_chosen"], cols["gold_rejected"], cols["cap_chosen"],
                                 cols["cap_rejected"], strict=True):
        assert (vc[0], vc[1]) > (vr[0], vr[1]) and (gc, gr) == (vc[0], vr[0]) and vc[2] == len(c)
    assert cols["cap_names"][0] == list(VERIFIER_POINTS)
    no_format, _ = verifier_pairs(tasks, responses, verdicts, 3, False, 0.0, 0.0, np.random.default_rng(0))
    assert len(no_format["prompt"]) == 2  # only prompt 0's right-wrong pairs
    # All alike: no pair at all.
    alike, stats = verifier_pairs(tasks[:1], responses[:1], [_verdicts([(False, False)] * 4)], 2, True, 0.0, 0.0,
                                  np.random.default_rng(0))
    assert stats["pairs"] == 0 and not alike["prompt"]


@pytest.mark.parametrize("label_noise,length_share", [(0.25, 0.0), (0.0, 0.4), (0.2, 0.3)])
def test_label_noise_and_length_preference_take_their_shares(label_noise, length_share):
    rng = np.random.default_rng(1)
    n = 6000
    tasks = _fake_tasks(n)
    # One right and one wrong response per prompt, of random lengths (some equal).
    responses = [["x" * int(rng.integers(1, 6)), "y" * int(rng.integers(1, 6))] for _ in range(n)]
    right_first = rng.random(n) < 0.5
    verdicts = [_verdicts([(bool(f), False), (not f, False)]) for f in right_first]
    cols, stats = verifier_pairs(tasks, responses, verdicts, 1, False, label_noise, length_share,
                                 np.random.default_rng(2))
    chosen_right = np.array(cols["gold_chosen"]) > np.array(cols["gold_rejected"])
    len_c, len_r = np.array([len(c) for c in cols["chosen"]]), np.array([len(r) for r in cols["rejected"]])
    assert abs(stats["length_decided"] - length_share) < 0.02
    # A length-decided label picks the longer one (or either on a tie); the rest follow the verifier, flipped with
    # label_noise; so P(chosen is the right one) = share * P(longer is right) + (1 - share) * (1 - noise).
    p_longer_right = np.mean(np.where(len_c == len_r, 0.5, (len_c > len_r) == chosen_right)) if length_share else 0
    expected = (1 - length_share) * (1 - label_noise) + length_share * 0.5
    assert abs(chosen_right.mean() - expected) < 0.025 and abs(stats["label_verifier_agreement"] - expected) < 0.025
    if length_share:
        assert p_longer_right > 0  # sanity: the formula's length term is measurable
    if length_share and not label_noise:  # every label against the verifier was decided by length, longer chosen
        assert np.all(len_c[~chosen_right] >= len_r[~chosen_right])


class ScriptedPolicy:
    """A fake policy (no model): the k-th sample of a prompt follows SCRIPT[k % 4] -- the bare right answer, the
    right answer in a sentence, a bare wrong one, a wrong one in a sentence -- read off the task set it is
    prepared with. Built by Hydra from ``policy._target_`` like a real one."""

    SCRIPT = ("{answer}", "So the answer is {answer}, as you can see.", "{wrong}", "I think it is {wrong} or so.")
    name = "scripted"
    compute = None

    def __init__(self, tag: str = "scripted"):
        self.tag, self.answers, self.calls = tag, {}, 0

    def prepare(self, cache, data, seed):
        self.answers = {p: t.answer for p, t in data.by_prompt.items()}
        self.world = data.world_spec(seed)
        return self

    def cache_spec(self):
        return {"policy": self.tag, "world": self.world}

    def sample(self, prompts, seed, stream):
        out = []
        for i, p in enumerate(prompts):
            answer = self.answers[p]
            wrong = answer.lower() if answer.isalpha() else str(int(answer) + 1)
            out.append(self.SCRIPT[i % len(self.SCRIPT)].format(answer=answer, wrong=wrong))
        return out


SCRIPTED = {"_target_": f"{__name__}.ScriptedPolicy"}


def _gold(**overrides) -> VerifierGold:
    settings = dict(families=FAMILIES, prompts=COUNTS, samples_per_prompt=4, pairs_per_prompt=2, format_pairs=True,
                    label_noise=0.0, length_share=0.0, seed=None)
    return VerifierGold(**{**settings, **overrides})


def test_gold_applies_samples_once_and_labels_pairs_by_the_verifier(tmp_path):
    from harness.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    data = _gold().apply(None, SCRIPTED, cache, seed=3)
    assert isinstance(data, VerifierData) and data.domains == list(FAMILIES)
    train = data.splits["train"]
    # SCRIPT gives each prompt 2 right and 2 wrong answers: 2 right-wrong pairs per prompt, all labelled right.
    assert len(train) == 2 * COUNTS["train"] * len(FAMILIES) and data.stats["train"]["pass_rate"] == 0.5
    assert all(c == 1.0 and r == 0.0 for c, r in zip(train["gold_chosen"], train["gold_rejected"], strict=True))
    assert set(train["domain"]) == set(FAMILIES)
    held_out = {p for s in ("val", "test") for p in data.splits[s]["prompt"]}
    assert held_out.isdisjoint(train["prompt"])
    entries = lambda: [e for e in (tmp_path / "verifier_samples").iterdir() if e.is_dir()]  # noqa: E731
    assert len(entries()) == 1
    # The same task seed: the cached samples are read back (a policy that would answer otherwise is not asked).
    assert _gold(label_noise=0.25).apply(None, SCRIPTED, cache, seed=3).splits["train"]["prompt"] == train["prompt"]
    assert len(entries()) == 1
    # gold.seed fixes tasks and samples across job seeds; the job seed still draws the pairs.
    fixed_a, fixed_b = (_gold(seed=7).apply(None, SCRIPTED, cache, seed=s) for s in (0, 1))
    assert fixed_a.eval_prompts(6, 0) == fixed_b.eval_prompts(6, 1) and fixed_a.sample_seed == 7
    assert fixed_a.splits["train"]["chosen"] != fixed_b.splits["train"]["chosen"]
    # Gold is correctness: 1 for the right answer, 0 otherwise; the eval prompts take the families in turn.
    prompts = data.eval_prompts(len(FAMILIES) * 2, 0)
    assert [d for _, d in prompts] == list(FAMILIES) * 2
    p, family = prompts[0]
    answer = data.by_prompt[p].answer
    assert data.gold_batch([p, p], [answer, f"no idea, maybe {answer}0"], [family] * 2).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="gold.prompts.eval"):
        data.eval_prompts(COUNTS["eval"] * len(FAMILIES) + 1, 0)
    units = gold_units(data, np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]), "within_prompt")
    assert units["scale_kind"] == "pass_rate" and units["mean"] == 0.625 and units["scale"] == 1.0


def test_oracle_labels_the_verifier_points_exactly(tmp_path):
    from harness.cache import ArtifactCache

    data = _gold(label_noise=0.25).apply(None, SCRIPTED, ArtifactCache(tmp_path), seed=0)
    result = OracleLabeler().label(data.splits["train"], seed=0, world=data.world)
    labels = np.array(result["labels"])  # (pairs, points)
    truth_c, truth_r = np.array(data.splits["train"]["cap_chosen"]), np.array(data.splits["train"]["cap_rejected"])
    decided = truth_c != truth_r
    assert np.all(labels[decided] == np.sign(truth_c - truth_r)[decided])  # exact where the point differs
    assert result["stats"]["agreement_with_truth"] == 1.0


def test_gold_settings_are_checked():
    for bad, match in [(dict(label_noise=0.6), "gold.label_noise"), (dict(length_share=1.5), "gold.length_share"),
                       (dict(samples_per_prompt=1), "gold.samples_per_prompt"),
                       (dict(prompts={**COUNTS, "val": 0}), "gold.prompts.val"),
                       (dict(prompts={"train": 1}), "gold.prompts"), (dict(families={}), "gold.families"),
                       (dict(seed=-1), "gold.seed")]:
        with pytest.raises(ValueError, match=match):
            _gold(**bad)
    gold = _gold()  # 4 eval prompts x 6 families
    gold.check_studies({"bon": {"n_prompts": 24}, "ppo": {"eval_prompts": 8, "train_prompts": 16}})
    with pytest.raises(ValueError, match="opt.bon.n_prompts = 25.*raise gold.prompts.eval to 5"):
        gold.check_studies({"bon": {"n_prompts": 25}})
    with pytest.raises(ValueError, match="opt.ppo.eval_prompts"):
        gold.check_studies({"ppo": {"eval_prompts": 8, "train_prompts": 17}})
    with pytest.raises(ValueError, match="shots"):
        Addition(1, 5, -1)
    with pytest.raises(ValueError, match="low"):
        Addition(5, 1, 0)


def test_a_job_on_verifier_gold_trains_on_its_pairs_and_reads_bon_as_pass_rate(tmp_path):
    """The whole job at tiny size: the tiny backbone pre-trains on the pairs' text, BoN reads the verifier."""
    overrides = [*TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}", "gold=verifier", "opt=bon",
                 "opt.bon.n_prompts=12", "opt.bon.n_samples=8", "opt.bon.ns=[1,2,4,8]", "gold.prompts.train=12",
                 "gold.prompts.val=3", "gold.prompts.test=4", "gold.prompts.eval=4", "gold.label_noise=0.1"]
    cfg = compose(overrides)
    cfg.policy = SCRIPTED  # the scripted policy in place of policy=tiny's node
    too_many = compose([*overrides, "opt.bon.n_prompts=13"])
    too_many.policy = SCRIPTED
    refused = run_job(too_many, tmp_path / "refused", {"arch": "single", "gold": "verifier"}, overrides)
    assert refused["status"] == "user_error" and "gold.prompts.eval" in refused["error"] and "data" not in refused
    out = run_job(cfg, tmp_path / "job", {"arch": "single", "gold": "verifier"}, overrides)
    assert out["status"] == "ok", out["error"]
    assert out["accuracy"]["gold"]["n"] > 0 and set(out["accuracy"]["gold"]["per_domain"]) <= set(FAMILIES)
    bon = out["bon"]
    assert bon["units"]["gold"]["scale_kind"] == "pass_rate" and bon["units"]["gold"]["mean"] == 0.5
    with open(tmp_path / "job" / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["n"]) for r in rows] == [1, 2, 4, 8] and float(rows[0]["gold"]) == pytest.approx(0.0, abs=1e-12)
    # gold is the pass-rate gain: at n=1 it is 0; with every prompt half right it stays within [-0.5, 0.5].
    assert abs(bon["observed_gold_peak"]) <= 0.5 and bon["last_sqrt_kl"] > 0
    rates = bon["pass_rate"]
    assert rates["initial"] == 0.5 and list(rates["at_n"]) == ["1", "2", "4", "8"] and rates["at_n"]["1"] == 0.5
    assert rates["at_n"]["8"] == pytest.approx(0.5 + float(rows[-1]["gold"])) and rates["drop"] >= 0


def test_pass_rate_curve_reads_peak_and_overoptimization():
    rows = [{"n": n, "proxy": p, "gold": g, "gold_se": 0.01}
            for n, p, g in [(1, 0.0, 0.0), (2, 0.5, 0.1), (4, 0.9, 0.15), (8, 1.2, 0.05)]]
    out = pass_rate_curve(rows, initial=0.3)
    assert out["peak"] == pytest.approx(0.45) and out["peak_n"] == 4 and out["at_max_n"] == pytest.approx(0.35)
    assert out["drop"] == pytest.approx(0.10) and out["proxy_rise_after_peak"] == pytest.approx(0.3)
    assert out["overoptimized"]
    rising = pass_rate_curve([{**r, "gold": 0.05 * i} for i, r in enumerate(rows)], initial=0.3)
    assert rising["peak_n"] == 8 and rising["drop"] == 0 and not rising["overoptimized"]


# The archs that need capability points per domain (their experts, probes or judge questions), and umm (routing
# by domain, upcycled FFNs): each trains on gold=verifier's pairs with the verifier's points, labelled by the oracle.
CAPABILITY_ARCHS = ("dmoerm", "armo", "single_judge", "umm")


@pytest.mark.parametrize("arch", CAPABILITY_ARCHS)
def test_archs_needing_capability_points_get_the_verifiers_from_the_labeler(arch, tmp_path):
    overrides = [*TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}", "gold=verifier", "opt=none", f"arch={arch}",
                 "gold.prompts.train=16", "gold.prompts.val=4", "gold.prompts.test=4", "gold.prompts.eval=1",
                 "export=false"]
    cfg = compose(overrides)
    cfg.policy = SCRIPTED
    out = run_job(cfg, tmp_path / "job", {"arch": arch, "gold": "verifier"}, overrides)
    assert out["status"] == "ok", out["error"]
    assert set(out["accuracy"]["gold"]["per_domain"]) == set(cfg.gold.families)
    if arch == "umm":
        return  # no labeler: its experts route by domain
    labeler = _labeler_stats(out["fit"])
    # The oracle reads the verifier exactly: every label it keeps agrees with the points' true order.
    assert labeler["asked"] > 0 and labeler["agreement_with_truth"] == 1.0
    if arch == "dmoerm":  # one expert per verifier point of every family
        assert {d: sorted(e) for d, e in out["fit"]["experts"].items()} == {
            f: sorted(VERIFIER_POINTS) for f in cfg.gold.families}


def _labeler_stats(report: dict) -> dict:
    """The labeler's statistics (harness/labelers summarize) wherever an arch's fit report keeps them."""
    if "asked" in report and "agreement_with_truth" in report:
        return report
    found = [_labeler_stats(v) for v in report.values() if isinstance(v, dict)]
    found = [f for f in found if f]
    return found[0] if found else {}


@pytest.mark.slow
def test_smollm2_answers_the_tasks_and_bon_reads_its_pass_rate(tmp_path):
    """The real path at its smallest: SmolLM2 samples (offline wheel), MiniLM proxies, BoN against the verifier."""
    overrides = ["+profile=verifiable", "threads=1", f"cache_dir={tmp_path / 'cache'}", "policy.max_new_tokens=8",
                 "gold.prompts.train=4", "gold.prompts.val=2", "gold.prompts.test=2", "gold.prompts.eval=2",
                 "opt.bon.n_prompts=4", "opt.bon.n_samples=8", "opt.bon.ns=[1,2,4,8]"]
    out = run_job(compose(overrides), tmp_path / "job", {"arch": "single", "gold": "verifier"}, overrides)
    assert out["status"] == "ok", out["error"]
    for split in ("train", "val", "test"):
        stats = out["gold"][split]
        assert stats["pairs"] > 0 and 0 < stats["pass_rate"] < 1
    assert out["gold"]["train"]["label_verifier_agreement"] < 1  # label_noise 0.25 flips some
    units = out["bon"]["units"]["gold"]
    assert units["scale_kind"] == "pass_rate" and 0 <= units["mean"] <= 1 and out["bon"]["n_samples"] == 8
    with open(tmp_path / "job" / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["n"]) for r in rows] == [1, 2, 4, 8]
    # Gold is a pass-rate gain over the initial policy: within [-mean, 1 - mean] at every n.
    assert all(-units["mean"] - 1e-9 <= float(r["gold"]) <= 1 - units["mean"] + 1e-9 for r in rows)


def test_the_verifiable_suite_asks_for_no_more_questions_than_its_families_hold():
    """Every task family of +suite=verifiable gives as many distinct questions as its prompt counts ask for, checked
    by the job's validation before anything is sampled (a too-narrow family once failed the suite's first job)."""
    cfg = compose(["+suite=verifiable"])
    gold = instantiate(cfg.gold, _convert_="all")
    gold.check_studies(dict(cfg.opt))
    narrow = instantiate(compose(["+suite=verifiable", "gold.prompts.train=100"]).gold, _convert_="all")
    with pytest.raises(ValueError, match="too few distinct questions"):
        narrow.check_studies(dict(cfg.opt))
