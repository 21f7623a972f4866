"""local: a local causal LM as capability judge (by default SmolLM2-135M-Instruct from its wheel).

The paper's question (English or Chinese template) is put to the model — through its chat template when it has
one — and the answer is read without sampling: the next-token log-probabilities of the two answer tokens ("1"
and "2") are compared, the larger wins (an exact tie is no answer). Each question is asked twice with the
responses swapped and a label kept only when both name the same response, which is what removes the strong
"always the first one" bias of small models.
"""

from __future__ import annotations

import logging

import torch

from ..cache import ArtifactCache
from ..device import CPU, Compute
from ..progress import progress
from . import check_min_kept_fraction, columns, questions, require_kept, resolve_template, summarize, swap_and_agree

log = logging.getLogger(__name__)


def _no_corpus(n: int):
    raise ValueError("arch/labeler=local: this backbone needs pre-training on world text; give a pretrained model "
                     "(e.g. backbone smollm2 or a local path) as the judge")


class LocalLabeler:
    name = "local"
    # Where the judge model runs (harness/device.py); the job gives it its own.
    compute: Compute = CPU

    def __init__(
        self,
        backbone,
        cache_dir: str,
        language: str = "en",
        template: str | None = None,
        point_names: dict[str, str] | None = None,
        answer_tokens: tuple[str, str] = ("1", "2"),
        chat_template: bool = True,
        batch_size: int = 16,
        min_kept_fraction: float = 0.2,
    ):
        if batch_size < 1:
            raise ValueError(f"arch.labeler.batch_size={batch_size} must be >= 1")
        if len(answer_tokens) != 2 or answer_tokens[0] == answer_tokens[1]:
            raise ValueError(f"arch.labeler.answer_tokens={answer_tokens} must be two different strings")
        self.backbone = backbone  # a harness.backbones.Backbone (instantiated by Hydra), prepared on first use
        self.cache_dir = cache_dir
        self.template = resolve_template(language, template)
        self.point_names = dict(point_names or {})
        self.answer_tokens = tuple(answer_tokens)
        self.chat_template = chat_template
        self.batch_size = batch_size
        self.min_kept_fraction = check_min_kept_fraction(min_kept_fraction)
        self.model = None

    def check(self) -> None:
        """What the job checks before training: the judge model is where the config says (nothing is loaded)."""
        if callable(getattr(self.backbone, "check", None)):
            self.backbone.check()

    def load(self):
        if self.model is not None:
            return
        if self.backbone.path is None:
            self.backbone.prepare(ArtifactCache(self.cache_dir), corpus=_no_corpus, seed=0)
        tok = self.backbone.tokenizer
        ids = []
        for t in self.answer_tokens:
            enc = tok.encode(t, add_special_tokens=False)
            if len(enc) != 1 or enc[0] == tok.unk_token_id:
                raise ValueError(f"arch/labeler=local: the answer {t!r} is not one token of the judge's vocabulary "
                                 f"(encodes to {enc}); choose a judge model that has it or other answer_tokens")
            ids.append(enc[0])
        self.answer_ids = ids
        self.model = self.backbone.causal_lm().eval().to(self.compute.device)

    def render(self, question: str) -> str:
        """The text the model continues: the chat template's user turn + assistant prefix, if it has one."""
        tok = self.backbone.tokenizer
        if self.chat_template and getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=False)
        return question + "\n"

    @torch.inference_mode()
    def answer_margins(self, texts: list[str]) -> torch.Tensor:
        """log p(answer 1) - log p(answer 2) for the token after each text, shape (N,).

        The difference of log-softmax values equals the difference of logits; computed as log-softmax anyway,
        so the numbers read as what they are."""
        self.load()
        tok = self.backbone.tokenizer
        enc = [tok.encode(t, add_special_tokens=False) for t in texts]
        margins = torch.empty(len(texts))
        order = sorted(range(len(texts)), key=lambda i: len(enc[i]))  # similar lengths per batch: less padding
        for start in progress(range(0, len(order), self.batch_size), desc="arch/labeler=local: questions",
                              unit="batch"):
            rows = order[start : start + self.batch_size]
            lengths = torch.tensor([len(enc[i]) for i in rows])
            ids = torch.full((len(rows), int(lengths.max())), tok.pad_token_id, dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, : len(enc[i])] = torch.tensor(enc[i])
            mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()  # right padding
            with self.compute.autocast():
                logits = self.model(input_ids=ids.to(self.compute.device), attention_mask=mask.to(self.compute.device),
                                    use_cache=False).logits  # (b, T, V)
            ends = (lengths - 1).to(logits.device)
            last = logits[torch.arange(len(rows), device=logits.device), ends].float().log_softmax(-1).cpu()  # (b, V)
            margins[rows] = last[:, self.answer_ids[0]] - last[:, self.answer_ids[1]]
        return margins

    def label(self, pairs, seed: int, world=None) -> dict:
        cols = columns(pairs)
        unique: dict[str, int] = {}  # rendered question -> row in the margin tensor
        slots = []
        for prompt, chosen, rejected, points in zip(cols["prompt"], cols["chosen"], cols["rejected"],
                                                    cols["cap_names"], strict=True):
            row = []
            for point in points:
                both = [self.render(q) for q in questions(self.template, self.point_names, prompt, chosen,
                                                          rejected, point)]
                row.append(tuple(unique.setdefault(t, len(unique)) for t in both))
            slots.append(row)
        margins = self.answer_margins(list(unique))

        def answer(i: int) -> int | None:
            m = float(margins[i])
            return 1 if m > 0 else 2 if m < 0 else None

        labels = [[swap_and_agree(answer(i), answer(j)) for i, j in row] for row in slots]
        stats = summarize(labels, cols, questions=len(unique), ties=int((margins == 0).sum()))
        stats["answered_first"] = float((margins > 0).float().mean()) if len(margins) else 0.0
        require_kept(stats, self.min_kept_fraction, "arch/labeler=local", (
            f"{len(unique)} questions to the judge {self.backbone.name} ({self.backbone.path}): {stats['ties']} "
            f"exact ties (no answer), {stats['answered_first']:.0%} answered 'reply 1' (a judge that always names "
            f"the same position loses every label to swap-and-agree)"))
        return {"labels": labels, "stats": stats}
