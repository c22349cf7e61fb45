"""How a task's questions become prompts: chat turns for chat models, few-shot text for base models.

A model whose tokenizer has a chat template (and `chat=True`) gets each question as one user
turn, and a completion ends at EOS. A base model (no chat template, e.g. Gemma3-270m) or
`chat=False` gets few-shot text instead:

    Question: <shot 1 question>
    Answer: <shot 1 gold answer>

    ... (`shots` of them) ...

    Question: <the question>
    Answer:

and the completion ends at the first newline (`FEWSHOT_STOP`), which is how the shots end.

The shots never come from the evaluated problems: reasoning-gym shots are drawn from their own
dataset seed (`FEWSHOT_DATASET_SEED`, distinct from the evaluation and training seeds); a JSONL
task uses the `shots` rows that follow each problem in the file (wrapping around), never the
problem itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from autodeco_lp.inference.sampling import format_prompts, uses_chat_template

FEWSHOT_DATASET_SEED = 2000
DEFAULT_SHOTS = 3
FEWSHOT_STOP = "\n"


@dataclass(frozen=True)
class Prompts:
    texts: list[str]  # one formatted prompt per problem
    add_special_tokens: bool  # True for raw text, so the tokenizer adds BOS
    stop_strings: tuple[str, ...]  # where a completion ends besides EOS (few-shot: a newline)

    @property
    def fewshot(self) -> bool:
        return bool(self.stop_strings)


def fewshot_text(shots, question: str) -> str:
    """`shots`: problems with `question` and `answer` (the gold answers are shown)."""
    lines = [f"Question: {shot.question}\nAnswer: {shot.answer}\n\n" for shot in shots]
    return "".join(lines) + f"Question: {question}\nAnswer:"


def task_prompts(tokenizer, task, problems, chat: bool = True, shots: int = DEFAULT_SHOTS) -> Prompts:
    """Prompts for `problems` of `task` (see the module docstring for the two styles)."""
    if uses_chat_template(tokenizer, chat):
        return Prompts(format_prompts(tokenizer, [p.question for p in problems], chat=True), False, ())
    if shots < 0:
        raise ValueError(f"`--shots` has to be >= 0, but is {shots}")
    texts = [fewshot_text(task.shots_for(problem, shots), problem.question) for problem in problems]
    return Prompts(texts, True, (FEWSHOT_STOP,))
