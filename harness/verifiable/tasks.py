"""Tasks with a verifier (issue 28): seeded generators of questions whose answer the harness knows, and the verifier
that marks a response right or wrong -- the exact gold of ``gold=verifier`` (harness/gold.py), after PPE (lmarena
2024: prompts with a verifiable answer, many policy samples per prompt, best-of-K read against correctness).

A family (a ``_target_`` under ``gold.families`` in conf/gold/verifier.yaml) draws questions from its difficulty
knobs and writes each one as a prompt: an instruction that fixes the answer's form, ``shots`` worked examples of
the same family, then the question::

    Answer with the number only.

    Q: What is 12 + 7?
    A: 19

    Q: What is 23 + 45?
    A:

The policy wraps the prompt in its chat template (harness/optimize/policy.py). Nothing is downloaded: the
questions come from the seeded generators and the small word list below.

The verifier, ``family.verify(task, response) -> Verdict(correct, formatted, extracted)``:

- extraction (``extract_number``, ``extract_capitals``), the first rule that applies:
  1. the bare answer: the whole response, less a leading "A:" (the prompt's answer slot, often repeated) and the
     whitespace, quotes, ``*`` and end punctuation around it, is one number (digits, or a number word zero..twenty)
     -- or, for word answers, as many words of letters as the answer has; else its first line is (an answer
     followed by an explanation);
  2. numbers: the first number right after an answer marker ("answer", "answer is", "answer:", "=", "equals");
     words: the first run of words in capitals (two letters or more each);
  3. numbers: the last number of the response.
  Numbers are an optional minus, digits (thousands commas allowed) and an optional decimal part; in rules 2 and 3
  only digits count (a spelled-out "one" in a sentence is too often not an answer). No candidate: incorrect.
- ``correct``: the extracted answer equals the task's (numbers as numbers: "68.0" is 68; words exactly, case
  included: the uppercase family asks for capitals).
- ``formatted``: the whole response is the bare answer (rule 1, not its first-line case) -- the answer alone, as
  the instruction asks (the format score, whether the answer is right or not).

A 135M model at sampling temperature 1 writes many answers that are not bare: rules 2 and 3 give it credit for a
right number stated in a sentence ("7 * 8 = 56, which ..."), and charge it for a wrong one; the rules are not
tuned to any model's phrasing. benchmarks/verifiable_pass_rates.py measures each family's pass rate.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from ..seeds import Stream, derive_seed

# Common short nouns: the items of the counting family and the words of the uppercase family.
WORDS = ("apple", "river", "stone", "cloud", "bread", "chair", "green", "horse", "light", "music", "paper", "plant",
         "sugar", "table", "train", "water", "house", "garden", "window", "bottle", "pencil", "yellow", "forest",
         "orange", "silver", "candle", "basket", "rabbit", "button", "ladder", "mirror", "pocket")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
# Unit conversions of the conversion family: (from unit, to unit, factor).
CONVERSIONS = (("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
               ("meters", "centimeters", 100), ("kilograms", "grams", 1000), ("feet", "inches", 12),
               ("years", "months", 12))
# The splits a task set is drawn for, in draw order: held-out prompts first, so growing the training split leaves
# them as they are. ``eval`` holds Best-of-N's prompts (gold=verifier's eval_prompts).
TASK_SPLITS = ("eval", "test", "val", "train")
# Bump when the way a question becomes a prompt changes (instruction, shots, layout): cached samples of the old
# prompts stop matching.
TASKS_VERSION = 1
# How many draws a family may spend per distinct question it is asked for before its knobs count as too narrow.
DRAWS_PER_QUESTION = 50

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
_MARKER_RE = re.compile(rf"(?:\banswer(?:\s+is)?|=|\bequals)\s*[:=]?\s*[\"'*]*\s*({_NUMBER})", re.IGNORECASE)
# One line of words: letters separated by spaces or tabs.
_LETTERS = r"[A-Za-z]+(?:[ \t]+[A-Za-z]+)*"
_CAPITALS_RE = re.compile(r"\b[A-Z]{2,}(?:\s+[A-Z]{2,})*\b")
# What may surround a bare answer: whitespace, quotes, emphasis and end punctuation.
_WRAPPING = " \t\n\r\"'`*.!,;:"
# The answer slot of the prompt's layout, which a model often repeats before its answer.
_ANSWER_LABEL = re.compile(r"^\s*A\s*:")


def _unwrap(text: str) -> str:
    """``text`` less a leading "A:" and the wrapping around it."""
    return _ANSWER_LABEL.sub("", text).strip(_WRAPPING)


@dataclass(frozen=True)
class Task:
    """One verifiable prompt: its family (the data's domain), the question alone, the full prompt and the answer."""

    family: str
    question: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Verdict:
    """The verifier's reading of one response."""

    correct: bool  # the extracted answer equals the task's
    formatted: bool  # the response is the bare answer, as the instruction asks (the format score)
    extracted: str | None  # what extraction found (None: nothing)


def _number_value(text: str) -> float | None:
    text = text.strip().lower()
    if text in NUMBER_WORDS:
        return float(NUMBER_WORDS.index(text))
    if re.fullmatch(_NUMBER, text):
        return float(text.replace(",", ""))
    return None


def extract_number(response: str) -> tuple[str | None, bool]:
    """(the answer extraction found, whether the response was the bare answer): the module docstring's rules."""
    bare = _unwrap(response)
    if _number_value(bare) is not None:
        return bare, True
    first = _unwrap(response.strip().split("\n", 1)[0])
    if _number_value(first) is not None:
        return first, False
    marked = _MARKER_RE.search(response)
    if marked:
        return marked.group(1), False
    numbers = _NUMBER_RE.findall(response)
    return (numbers[-1], False) if numbers else (None, False)


def _words(text: str, n: int) -> str | None:
    """``text`` as ``n`` words of letters on one line (single-spaced), else None."""
    return " ".join(text.split()) if re.fullmatch(_LETTERS, text) and len(text.split()) == n else None


def extract_capitals(response: str, words: int) -> tuple[str | None, bool]:
    """Word answers of ``words`` words: the bare response (or its first line) when it is that many words of letters,
    else the first run of capitals."""
    bare = _words(_unwrap(response), words)
    if bare is not None:
        return bare, True
    first = _words(_unwrap(response.strip().split("\n", 1)[0]), words)
    if first is not None:
        return first, False
    run = _CAPITALS_RE.search(response)
    return (" ".join(run.group(0).split()), False) if run else (None, False)


class Family:
    """A task family: ``question(rng)`` draws one (question, answer); the prompt and the verdict are shared."""

    # The first line of every prompt: the form the answer must take (``formatted`` checks it).
    instruction = "Answer with the number only."

    def __init__(self, shots: int):
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
            raise ValueError(f"gold.families.*.shots={shots!r} must be an integer >= 0")
        self.shots = shots

    def question(self, rng: np.random.Generator) -> tuple[str, str]:
        raise NotImplementedError

    def knobs(self) -> dict:
        """What determines the family's prompts (task cache keys)."""
        return {"family": type(self).__name__, **vars(self)}

    def extract(self, response: str) -> tuple[str | None, bool]:
        return extract_number(response)

    def same(self, extracted: str, answer: str) -> bool:
        value = _number_value(extracted)
        return value is not None and value == float(answer)

    def make(self, name: str, rng: np.random.Generator) -> Task:
        """A prompt: the instruction, ``shots`` worked examples, then the question (its answer withheld)."""
        question, answer = self.question(rng)
        examples = [self.question(rng) for _ in range(self.shots)]
        blocks = [self.instruction, *(f"Q: {q}\nA: {a}" for q, a in examples), f"Q: {question}\nA:"]
        return Task(family=name, question=question, prompt="\n\n".join(blocks), answer=answer)

    def verify(self, task: Task, response: str) -> Verdict:
        extracted, bare = self.extract(response)
        return Verdict(correct=extracted is not None and self.same(extracted, task.answer), formatted=bare,
                       extracted=extracted)


def _integer_range(where: str, low: int, high: int, least: int = 0) -> None:
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"gold.families.{where}: {v!r} must be an integer")
    if not least <= low <= high:
        raise ValueError(f"gold.families.{where}: need {least} <= low ({low}) <= high ({high})")


class Addition(Family):
    """What is a + b? with a, b uniform in [low, high]."""

    def __init__(self, low: int, high: int, shots: int):
        super().__init__(shots)
        _integer_range("add", low, high)
        self.low, self.high = low, high

    def question(self, rng):
        a, b = (int(x) for x in rng.integers(self.low, self.high + 1, size=2))
        return f"What is {a} + {b}?", str(a + b)


class Multiplication(Family):
    """What is a * b? with a uniform in [2, max_a], b in [2, max_b]."""

    def __init__(self, max_a: int, max_b: int, shots: int):
        super().__init__(shots)
        _integer_range("multiply", 2, max_a, least=2)
        _integer_range("multiply", 2, max_b, least=2)
        self.max_a, self.max_b = max_a, max_b

    def question(self, rng):
        a, b = int(rng.integers(2, self.max_a + 1)), int(rng.integers(2, self.max_b + 1))
        return f"What is {a} * {b}?", str(a * b)


class Comparison(Family):
    """Which is larger, a or b? Two different integers in [low, high]."""

    def __init__(self, low: int, high: int, shots: int):
        super().__init__(shots)
        _integer_range("compare", low, high)
        if high - low < 1:
            raise ValueError(f"gold.families.compare: [low, high] = [{low}, {high}] holds fewer than 2 integers")
        self.low, self.high = low, high

    def question(self, rng):
        a, b = (int(x) for x in rng.choice(np.arange(self.low, self.high + 1), size=2, replace=False))
        return f"Which is larger, {a} or {b}?", str(max(a, b))


class Counting(Family):
    """How many words are in this list: ...? Between min_items and max_items words of WORDS (repeats allowed)."""

    def __init__(self, min_items: int, max_items: int, shots: int):
        super().__init__(shots)
        _integer_range("count", min_items, max_items, least=1)
        self.min_items, self.max_items = min_items, max_items

    def question(self, rng):
        n = int(rng.integers(self.min_items, self.max_items + 1))
        items = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n)]
        return f"How many words are in this list: {', '.join(items)}?", str(n)


class Conversion(Family):
    """How many <small unit> are in q <large unit>? q uniform in [1, max_quantity], units from CONVERSIONS."""

    def __init__(self, max_quantity: int, shots: int):
        super().__init__(shots)
        _integer_range("convert", 1, max_quantity, least=1)
        self.max_quantity = max_quantity

    def question(self, rng):
        unit, small, factor = CONVERSIONS[int(rng.integers(len(CONVERSIONS)))]
        q = int(rng.integers(1, self.max_quantity + 1))
        return f"How many {small} are in {q} {unit}?", str(q * factor)


class Uppercase(Family):
    """Instruction following: write ``words`` words of WORDS in capital letters (answered exactly, case included)."""

    instruction = "Answer with the words in capital letters only."

    def __init__(self, words: int, shots: int):
        super().__init__(shots)
        _integer_range("uppercase", 1, words, least=1)
        self.words = words

    def question(self, rng):
        chosen = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=self.words))
        return f"Write '{chosen}' in capital letters.", chosen.upper()

    def extract(self, response):
        return extract_capitals(response, self.words)

    def same(self, extracted, answer):
        return extracted == answer


def draw_tasks(families: dict[str, Family], counts: dict[str, int], seed: int) -> dict[str, list[Task]]:
    """``counts[split]`` tasks of every family for each split of TASK_SPLITS, family-major: ``{split: [tasks]}``.

    No question appears twice in a task set (so no held-out question is trained on). Each (family, split) draws from
    its own stream, keyed by the family's name, so adding a family or changing another split's count leaves a
    family's held-out questions as they were (unless a question is taken, which moves the draw on)."""
    out: dict[str, list[Task]] = {split: [] for split in TASK_SPLITS}
    for name, family in families.items():
        taken: set[str] = set()
        for s, split in enumerate(TASK_SPLITS):
            rng = np.random.default_rng(derive_seed(seed, Stream.VERIFIER_TASKS, zlib.crc32(name.encode()), s))
            want, draws = counts[split], 0
            tasks: list[Task] = []
            while len(tasks) < want:
                draws += 1
                if draws > DRAWS_PER_QUESTION * max(1, want):
                    raise ValueError(f"gold.families.{name}: its knobs give too few distinct questions for "
                                     f"{sum(counts.values())} prompts ({len(taken)} found); widen its ranges or "
                                     "lower gold.prompts")
                task = family.make(name, rng)
                if task.question not in taken:
                    taken.add(task.question)
                    tasks.append(task)
            out[split] += tasks
    return out
