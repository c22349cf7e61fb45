"""Publishing heads to the Hugging Face Hub, through huggingface_hub's own upload API.

What is uploaded is exactly what `AutoDecoHeads.save_pretrained` writes (`autodeco_config.json` +
`autodeco_heads.safetensors`) plus a model card `README.md`: the card a fit wrote next to its
heads when given, else a short one made from the heads' config. One commit: `HfApi.create_repo`
(an existing repo is reused), then `HfApi.upload_folder` on a staged copy, so nothing else of the
caller's folder (checkpoints, metrics, a cache) is ever uploaded.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from autodeco_lp.hub.atomic import write_text
from autodeco_lp.hub.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_heads, save_heads
from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.models import canonical_model_id

CARD_NAME = "README.md"
# The files one push uploads, in the order a reader of the repo meets them.
PUSHED_NAMES = (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME)


def card_header(base_model: str | None, heads: str) -> str:
    """The model card's front matter, title and loading snippet; `heads` is the folder or Hub id the
    snippet loads. A fit's card (training/model_card.py) continues it with the run's table."""
    base = canonical_model_id(base_model) if base_model else None
    base_line = f"base_model: {base}\n" if base else ""
    front = f"---\nlibrary_name: autodeco_lp\n{base_line}tags: [autodeco, decoding]\n---"
    trained_on = f" on a frozen `{base}`" if base else ""
    title = f"AutoDeco heads for {base}" if base else "AutoDeco heads"
    return f"""{front}

# {title}

Two small heads that predict a temperature and a top-p for every token (AutoDeco, Wang et al.,
ICLR 2026), trained with `autodeco_lp`{trained_on}.

```python
from autodeco_lp import AutoDeco
processor = AutoDeco.from_pretrained(model, "{heads}")
model.generate(**inputs, do_sample=True, top_k=None, logits_processor=[processor])
```
"""


def default_card(config: AutoDecoConfig, repo_id: str) -> str:
    """A short card for heads pushed without the card of their fit: the header and the config's switches."""
    switches = [
        ("temperature head", "on" if config.enable_temperature_head else "off"),
        ("top-p head", "on" if config.enable_top_p_head else "off"),
        ("hidden size / vocabulary", f"{config.hidden_size} / {config.vocab_size}"),
        ("autodeco_lp version", config.library_version),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in switches)
    return card_header(config.base_model_name_or_path, repo_id) + f"\n| | |\n|---|---|\n{table}\n"


def push_heads(
    config: AutoDecoConfig,
    state_dict: dict[str, torch.Tensor],
    repo_id: str,
    *,
    model_card: str | os.PathLike | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Upload heads (native format) and their model card to the Hub repo `repo_id`, creating it if needed.

    Args:
        repo_id: `org/name` (or `name`, in your own namespace).
        model_card: a card file to upload as README.md (a fit writes one next to its heads);
            default: a short card made from `config`.
        private: create the repo private (an existing repo keeps its visibility).
        token: Hub token (default: the one huggingface_hub finds, `HF_TOKEN` or `hf auth login`).
        revision: the branch to commit to (created from the default branch when missing).
        commit_message: default "Upload AutoDeco heads".
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        huggingface_hub's `CommitInfo` (`.commit_url`, `.pr_url`).
    """
    _check_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set. Unset it (publishing needs the Hub).")
    card = _card_text(model_card) if model_card is not None else default_card(config, repo_id)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="autodeco-push-") as staging:
        folder = Path(staging)
        save_heads(config, state_dict, folder)
        write_text(folder / CARD_NAME, card)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # `name` -> `you/name`
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            allow_patterns=list(PUSHED_NAMES),
            revision=revision,
            commit_message=commit_message or "Upload AutoDeco heads",
            create_pr=create_pr,
        )


@dataclass
class PushArgs:
    """Options of `autodeco push`; each field's metadata is its `--help` text."""

    heads: str | None = field(
        default=None, metadata={"help": "Heads to publish: a folder (a fit's output, any layout) or a Hub id."}
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub repo to upload to (org/name); created if missing."}
    )
    model_card: str | None = field(
        default=None,
        metadata={
            "help": "Card file to upload as README.md; default: the README.md beside the heads, else a short card."
        },
    )
    private: bool = field(default=False, metadata={"help": "Create the repo private (an existing repo keeps its own)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to; created if missing."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})

    def __post_init__(self) -> None:
        for name in ("heads", "repo_id"):
            if not getattr(self, name):
                raise ValueError(f"`--{name.replace('_', '-')}` is required; pass it.")


def push(args: PushArgs) -> CommitInfo:
    """`autodeco push`: read the heads (any layout), then `push_heads` them with their card."""
    config, tensors = read_heads(args.heads)
    card = args.model_card
    beside = Path(args.heads) / CARD_NAME
    if card is None and beside.is_file():  # the card a fit wrote next to its heads
        card = beside
    return push_heads(
        config,
        tensors,
        args.repo_id,
        model_card=card,
        private=True if args.private else None,  # None: a new repo gets the account's default visibility
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
    )


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` has to be a Hub repo id string (`org/name`), but is {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repo id ({exc}); pass `org/name`.") from exc


def _card_text(model_card: str | os.PathLike) -> str:
    path = Path(model_card)
    if not path.is_file():
        raise ValueError(
            f"`model_card` {str(path)!r} is not a file; pass the README.md a fit wrote next to its heads, "
            "or leave it unset for a card made from the config."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"`model_card` {str(path)!r} is not UTF-8 text ({exc.reason}); pass a Markdown file.") from exc
