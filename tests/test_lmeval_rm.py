"""A trained RM answers lm-eval multiple-choice tasks through the `rmharness-rm` model; on `test_prefs` (the
job's own test pairs) lm-eval's acc must be exactly the harness's gold / human accuracy."""

import pytest
import torch

from harness.accuracy import preference_accuracy
from harness.archs.single import SingleRM
from harness.lmeval import RewardModelLM, preference_rows, rm_lm_eval


@pytest.fixture(scope="module")
def trained(tiny):
    rm = SingleRM()
    rm.fit(tiny.train, tiny.val, tiny.ctx())
    return rm


def our_accuracy(tiny, rm, gold=True):
    ds = tiny.data.splits["test"]
    r_c, r_r = rm.score(tiny.test.chosen), rm.score(tiny.test.rejected)
    acc = preference_accuracy(r_c.numpy(), r_r.numpy(), ds["domain"],
                              ds["gold_chosen"] if gold else None, ds["gold_rejected"] if gold else None)
    return acc["gold" if gold else "human"]


def test_rows_drop_gold_ties_and_shuffle_the_answer(tiny):
    ds = tiny.data.splits["test"]
    rows = preference_rows(ds, seed=0)
    ties = sum(g_c == g_r for g_c, g_r in zip(ds["gold_chosen"], ds["gold_rejected"], strict=True))
    assert len(rows) == len(ds) - ties
    labels = [r["label"] for r in rows]
    assert 0.3 < sum(labels) / len(labels) < 0.7  # the right answer is not always first
    for r in rows[:20]:
        ex = ds[r["id"]]
        right = r["choices"][r["label"]]
        assert right == (ex["chosen"] if ex["gold_chosen"] > ex["gold_rejected"] else ex["rejected"])


def test_lm_eval_acc_equals_our_gold_accuracy(tiny, trained, tmp_path):
    out = rm_lm_eval(trained, tiny.backbone, ["test_prefs"], tiny.data.splits["test"], tmp_path, limit=None,
                     batch_size=64, seed=0)
    ours = our_accuracy(tiny, trained)
    assert out["test_prefs"]["n_samples"] == ours["n"]
    assert out["test_prefs"]["acc"] == pytest.approx(ours["overall"], abs=1e-12)
    assert ours["overall"] > 0.5  # a trained RM, not chance: the equality above is not 0.5 == 0.5


def test_without_gold_the_answer_is_the_labelled_chosen(tiny, trained, tmp_path):
    ds = tiny.data.splits["test"].remove_columns(["gold_chosen", "gold_rejected"])
    out = rm_lm_eval(trained, tiny.backbone, ["test_prefs"], ds, tmp_path, limit=None, batch_size=64, seed=0)
    ours = our_accuracy(tiny, trained, gold=False)
    assert out["test_prefs"]["n_samples"] == len(ds)
    assert out["test_prefs"]["acc"] == pytest.approx(ours["overall"], abs=1e-12)


def test_rewards_are_the_rm_scores_and_generation_is_refused(tiny, trained):
    class Req:
        def __init__(self, *args):
            self.args = args

    prompts, responses = tiny.data.corpus(3, 0)
    lm = RewardModelLM(trained, tiny.backbone)
    got = lm.loglikelihood([Req(p, " " + r) for p, r in zip(prompts, responses, strict=True)])
    from harness.data.schema import encode_sequences

    seqs = encode_sequences(tiny.backbone.tokenizer, tiny.backbone.join, prompts, responses, [""] * 3, {},
                            tiny.backbone.max_length)
    torch.testing.assert_close(torch.tensor([g[0] for g in got]), trained.score(seqs))
    with pytest.raises(NotImplementedError, match="multiple_choice"):
        lm.generate_until([])


def test_unknown_task_names_the_config_key(tiny, trained, tmp_path, lm_eval_index):
    with pytest.raises(ValueError, match="eval.lm_eval_tasks.*no_such_task"):
        rm_lm_eval(trained, tiny.backbone, ["no_such_task"], tiny.data.splits["test"], tmp_path, None, 64, 0)
