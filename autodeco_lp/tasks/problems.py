"""Tasks with a verifier: `reasoning_gym:NAME` (optional extra) or a JSONL file of questions.

A task yields `Problem`s and scores a completion: the answer is extracted from the completion
(`extract_answer`) and checked by the task's own verifier (reasoning-gym's `score_answer`).

Seeds: reasoning-gym builds its problems from a dataset seed. Evaluation uses dataset seed
`EVAL_DATASET_SEED` (0) by default and the training-data builder `TRAIN_DATASET_SEED` (1000),
and `autodeco data sample` refuses the evaluation seed, so the shipped heads never train on the
generator stream they are evaluated on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodeco_lp.hub.jsonl import parse_json
from autodeco_lp.tasks.prompting import FEWSHOT_DATASET_SEED

EVAL_DATASET_SEED = 0
TRAIN_DATASET_SEED = 1000

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    index: int
    entry: dict[str, Any] = field(default_factory=dict, compare=False)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(?:\.\d+)?", text.strip().replace(",", "")))


def extract_answer(completion: str, gold: str | None = None) -> str:
    """The answer a completion commits to, in this order of preference:

    1. the text of the last `<answer>...</answer>` tag;
    2. otherwise the text after the last "answer is" / "answer:" (to the end of that line);
    3. then, when the gold answer is a number, the last number in what remains (commas dropped,
       a trailing ".0" kept as written);
    4. otherwise the last non-empty line, stripped of surrounding spaces and a final period.
    """
    text = completion
    tags = _ANSWER_TAG.findall(text)
    if tags:
        text = tags[-1]
    else:
        found = list(_ANSWER_IS.finditer(text))
        if found:
            text = found[-1].group(1).splitlines()[0]
    if gold is not None and _is_number(gold):
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1].replace(",", "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1].rstrip(".").strip() if lines else ""


def parse_task_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`["min_digits=1", "name=x"]` -> `{"min_digits": 1, "name": "x"}` (values read as JSON when they parse)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"`--task-option` has to look like KEY=VALUE, but is {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


class ReasoningGymTask:
    """`reasoning_gym:NAME` with its dataset options; scoring uses the task's own `score_answer`."""

    def __init__(self, name: str, options: dict[str, Any], dataset_seed: int, size: int) -> None:
        try:
            import reasoning_gym  # noqa: PLC0415 - optional (the `tasks` extra); JSONL tasks work without it
        except ImportError as exc:
            raise ValueError(
                "reasoning_gym tasks need the reasoning-gym package: pip install 'autodeco-lp[tasks]'"
            ) from exc
        try:
            self.dataset = reasoning_gym.create_dataset(name, size=size, seed=dataset_seed, **options)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"`--task reasoning_gym:{name}` with options {options} failed: {exc}") from exc
        self.name, self.options, self.dataset_seed = name, options, dataset_seed
        self.problems = [Problem(e["question"], str(e["answer"]), i, e) for i, e in enumerate(self.dataset)]
        self._shots: list[Problem] | None = None

    def shots_for(self, problem: Problem, count: int) -> list[Problem]:
        """Few-shot examples: the same `count` problems for every question, from their own dataset seed."""
        if count == 0:
            return []
        if self._shots is None or len(self._shots) != count:
            self._shots = ReasoningGymTask(self.name, self.options, FEWSHOT_DATASET_SEED, count).problems
        return self._shots

    @property
    def spec(self) -> str:
        return f"reasoning_gym:{self.name}"

    def score(self, problem: Problem, completion: str) -> float:
        answer = extract_answer(completion, problem.answer)
        return float(self.dataset.score_answer(answer, problem.entry) or 0.0)


def _normalise(text: str) -> str:
    return re.sub(r"[\s.,;:!?\"'`]+", " ", text.lower()).strip()


class JsonlTask:
    """User data: one `{"question": str, "answer": str | number, "choices": [str, ...]?}` per line.

    Scoring, by the kind of answer:
    - with `choices`: multiple choice; the question shows them as "A. ...", "B. ..."; a completion
      is right when it names the gold letter (as a standalone letter, the last one it names) or
      contains the gold choice's text; the gold `answer` may be the letter or the choice text;
    - a numeric answer: the extracted number equals it (within 1e-6);
    - otherwise: exact match of the extracted answer, case, spaces and punctuation ignored.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.problems: list[Problem] = []
        try:
            text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is not part of row 1
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise ValueError(
                f"{path}:{line}: not UTF-8 (byte {exc.object[exc.start]:#04x}); save the task file as UTF-8"
            ) from exc
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or len(self.problems) >= size:
                continue
            row = parse_json(line, f"{path}:{number}")  # names path:line itself, deep nesting included
            try:
                question, raw_answer, choices = row["question"], row["answer"], row.get("choices")
                if not isinstance(question, str) or (
                    choices is not None
                    and not (isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices))
                ):
                    raise ValueError("`question` has to be a string and `choices` a non-empty list of strings")
                # A gold answer is text or a finite number; null, NaN, lists and objects would be scored
                # against their Python spelling ("None", "nan", ...), silently wrong.
                if isinstance(raw_answer, bool) or not isinstance(raw_answer, (str, int, float)):
                    raise ValueError(f"`answer` has to be a string or a number, but is {raw_answer!r}")
                if isinstance(raw_answer, float) and not math.isfinite(raw_answer):
                    raise ValueError(f"`answer` has to be finite, but is {raw_answer!r}")
                answer = str(raw_answer)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{number}: a task row needs question, answer and optional choices ({exc})"
                ) from exc
            if choices:
                letters = [chr(ord("A") + i) for i in range(len(choices))]
                question = question + "\n" + "\n".join(f"{letter}. {c}" for letter, c in zip(letters, choices))
                if answer.strip().upper() in letters:
                    answer = answer.strip().upper()
                elif answer in choices:
                    answer = letters[choices.index(answer)]
                else:
                    raise ValueError(f"{path}:{number}: answer {answer!r} is neither a choice letter nor a choice")
            self.problems.append(Problem(question, answer, len(self.problems), {"choices": choices}))
        if not self.problems:
            raise ValueError(f"`--task` {str(path)!r} has no rows")

    @property
    def spec(self) -> str:
        return str(self.path)

    def shots_for(self, problem: Problem, count: int) -> list[Problem]:
        """Few-shot examples: the `count` rows after `problem` in the file (wrapping), never itself."""
        if count >= len(self.problems):
            raise ValueError(
                f"{self.path} has {len(self.problems)} rows: too few for {count} few-shot examples "
                "besides each question; lower --shots"
            )
        return [self.problems[(problem.index + k) % len(self.problems)] for k in range(1, count + 1)]

    def score(self, problem: Problem, completion: str) -> float:
        choices = problem.entry.get("choices")
        if choices:
            named = re.findall(r"\b([A-Z])\b", completion)
            if named:
                return float(named[-1] == problem.answer)
            gold_text = choices[ord(problem.answer) - ord("A")]
            return float(_normalise(gold_text) in _normalise(completion))
        answer = extract_answer(completion, problem.answer)
        if _is_number(problem.answer):
            try:
                return float(abs(float(answer) - float(problem.answer.replace(",", ""))) < 1e-6)
            except ValueError:
                return 0.0
        return float(_normalise(answer) == _normalise(problem.answer))


def load_task(spec: str, options: dict[str, Any] | None = None, dataset_seed: int = EVAL_DATASET_SEED, size: int = 100):
    """A task from its spec: `reasoning_gym:NAME` or a JSONL file (see `JsonlTask`)."""
    if spec.startswith("reasoning_gym:") and len(spec) > len("reasoning_gym:"):
        return ReasoningGymTask(spec.split(":", 1)[1], options or {}, dataset_seed, size)
    if Path(spec).is_file():
        if options:
            raise ValueError(f"`--task-option` applies to reasoning_gym tasks only, not the file {spec!r}")
        return JsonlTask(Path(spec), size)
    raise ValueError(
        f"`--task` {spec!r} is not a known task; use reasoning_gym:NAME (e.g. reasoning_gym:basic_arithmetic) "
        "or a JSONL file of {question, answer[, choices]}"
    )
