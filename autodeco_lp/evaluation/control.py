"""`autodeco eval control`: the paper's Table 4 for our heads.

For each held-out prompt (evaluation problems, dataset seed 0, of the given tasks):

1. the base model answers it greedily (`--max-new-tokens`), without any command;
2. that same response is read by the model three ways: after the plain prompt, after the prompt
   with each held-out *low*-diversity paraphrase, and with each held-out *high*-diversity one
   (commands placed exactly as in training, `autodeco_lp.training.ranking.with_command`);
3. the heads' T and P are averaged over the response tokens; low and high are averaged over
   their paraphrases.

Teacher-forcing one response isolates what the command does to the heads: the tokens are the
same, only what the model has read differs (sampling a fresh response per command would mix in
the change of text). Reported per version: mean T and P over prompts, their change from the
plain prompt, and consistency = the share of prompts whose mean moved in the commanded direction
(strictly lower for low, strictly higher for high).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from autodeco_lp.engines import Decoding, Seeding, make_sampler
from autodeco_lp.hub.atomic import atomic_write, write_text
from autodeco_lp.hub.registry import resolve_heads_for_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, load_task
from autodeco_lp.tasks.prompting import Prompts, task_prompts
from autodeco_lp.training.data import tokenize_row
from autodeco_lp.training.hidden import supervised_hidden_states
from autodeco_lp.training.ranking import DIRECTIONS, load_commands, with_command


@dataclass
class ControlArgs:
    model: str = field(default="smollm2", metadata={"help": "Base model: Hub id, folder, `smollm2` or `gemma3`."})
    heads: str | None = field(
        default=None, metadata={"help": "Heads folder or Hub id; default: the registry entry for --model."}
    )
    prompts: int = field(default=100, metadata={"help": "Held-out prompts (split evenly over --tasks)."})
    tasks: str = field(
        default="reasoning_gym:products,reasoning_gym:chain_sum",
        metadata={
            "help": "Comma-separated tasks whose evaluation problems (dataset seed 0) are the prompts; "
            "JSONL files work too."
        },
    )
    commands: str = field(
        default="default",
        metadata={"help": "Commands file (`default`: the shipped one); its held-out paraphrases are used."},
    )
    max_new_tokens: int = field(
        default=32, metadata={"help": "Length of the greedy response that is read under each command."}
    )
    out: str | None = field(default=None, metadata={"help": "Folder for control.json and control.md."})
    device: str | None = field(default=None, metadata={"help": "torch device; default: CUDA if available."})

    def __post_init__(self) -> None:
        if self.out is None:
            raise ValueError("`--out` is required: the folder for control.json and control.md")
        if self.prompts < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"`--prompts` and `--max-new-tokens` have to be positive, but are {self.prompts} and "
                f"{self.max_new_tokens}"
            )


def _rows(prompts, texts, completions, fewshot: bool) -> list[dict]:
    """Training-style rows holding each response (so the command lands where training put it)."""
    if fewshot:
        return [{"prompt": t, "completion": c + "\n", "eos": False} for t, c in zip(texts, completions)]
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
        for p, c in zip(prompts, completions)
    ]


@torch.no_grad()
def _mean_heads(model, tokenizer, heads, rows: list[dict], batch_size: int = 16) -> torch.Tensor:
    """`(len(rows), 2)`: mean T and mean P over each row's response tokens."""
    projection = OutputProjection.from_model(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = [tokenize_row(row, tokenizer, 4096)[0] for row in rows]
    means = []
    for start in range(0, len(examples), batch_size):
        for hidden, _ in supervised_hidden_states(model, examples[start : start + batch_size], pad):
            t, p = heads(hidden, projection(hidden))
            means.append(torch.stack([t.mean(), p.mean()]))
    return torch.stack(means).cpu()


def measure_control(args: ControlArgs, progress: bool = True) -> dict:
    commands = load_commands(args.commands)
    # The hf engine: the heads read the model's hidden states over each response (teacher forcing).
    sampler = make_sampler("hf", args.model, device=args.device)
    model, tokenizer = sampler.model, sampler.tokenizer
    heads = AutoDecoHeads.from_pretrained(args.heads or resolve_heads_for_model(model)).to(model.device).eval()
    specs = [s.strip() for s in args.tasks.split(",") if s.strip()]
    if not specs:
        raise ValueError("`--tasks` is empty")
    questions, texts = [], []
    for k, spec in enumerate(specs):
        share = args.prompts // len(specs) + (k < args.prompts % len(specs))
        task = load_task(spec, {}, dataset_seed=EVAL_DATASET_SEED, size=share)
        prompts = task_prompts(tokenizer, task, task.problems)
        questions += [p.question for p in task.problems]
        texts += prompts.texts
    # One model, so every task's prompts have the same style (chat, or few-shot with its stop string).
    everything = Prompts(texts, prompts.add_special_tokens, prompts.stop_strings)
    responses = sampler.sample(
        everything,
        0,
        len(texts),
        Decoding("greedy"),
        Seeding(0, "control", 0),  # greedy: unused
        samples=1,
        max_new_tokens=args.max_new_tokens,
        batch_size=32,
    )
    base_rows = _rows(questions, texts, [r[0].text for r in responses], everything.fewshot)
    plain = _mean_heads(model, tokenizer, heads, base_rows)  # (N, 2)
    versions = {"none": plain}
    for direction in DIRECTIONS:
        per_paraphrase = [
            _mean_heads(model, tokenizer, heads, [with_command(r, c) for r in base_rows])
            for c in commands.heldout[direction]
        ]
        versions[direction] = torch.stack(per_paraphrase).mean(0)  # (N, 2)
    table = summarise_versions(versions)
    report = {
        "settings": {
            **asdict(args),
            "prompts_measured": len(questions),
            "commands_heldout": {d: list(commands.heldout[d]) for d in DIRECTIONS},
            "heads_resolved": args.heads or "registry",
        },
        "versions": table,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "control.json", lambda p: write_text(p, json.dumps(report, indent=2, sort_keys=True) + "\n"))
    atomic_write(out / "control.md", lambda p: write_text(p, control_table(report)))
    return report


def summarise_versions(versions: dict[str, torch.Tensor]) -> dict:
    """`versions`: "none" / "low" / "high" -> `(N, 2)` per-prompt mean (T, P). Returns the table's
    entries: means, change from "none", and consistency (share strictly moved the commanded way)."""
    plain = versions["none"]
    table = {}
    for name, values in versions.items():
        entry = {
            "mean_temperature": values[:, 0].mean().item(),
            "mean_top_p": values[:, 1].mean().item(),
            "delta_temperature": (values[:, 0] - plain[:, 0]).mean().item(),
            "delta_top_p": (values[:, 1] - plain[:, 1]).mean().item(),
        }
        if name != "none":
            moved = (values - plain) < 0 if name == "low" else (values - plain) > 0  # (N, 2)
            entry.update(
                consistency_temperature=moved[:, 0].float().mean().item(),
                consistency_top_p=moved[:, 1].float().mean().item(),
            )
        table[name] = entry
    return table


def control_table(report: dict) -> str:
    lines = ["| command | mean T | ΔT | T consistency | mean P | ΔP | P consistency |", "|---|---|---|---|---|---|---|"]
    for name, v in report["versions"].items():
        ct = f"{100 * v['consistency_temperature']:.0f}%" if "consistency_temperature" in v else "-"
        cp = f"{100 * v['consistency_top_p']:.0f}%" if "consistency_top_p" in v else "-"
        lines.append(
            f"| {name} | {v['mean_temperature']:.3f} | {v['delta_temperature']:+.3f} | {ct} | {v['mean_top_p']:.4f} "
            f"| {v['delta_top_p']:+.4f} | {cp} |"
        )
    s = report["settings"]
    caption = (
        f"Plain-language control on {s['model']} with heads {s['heads_resolved']}: "
        f"{s['prompts_measured']} held-out prompts ({s['tasks']}), held-out paraphrases, "
        f"greedy responses of {s['max_new_tokens']} tokens read under each command."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"
