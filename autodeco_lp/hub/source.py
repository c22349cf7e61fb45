"""Where a checkpoint's files come from: a local folder or a Hub repo, and the path safety of both.

`open_source(path_or_repo_id, ...)` returns an object with `description` (for messages),
`get(name) -> Path | None` (one file by its name inside the checkpoint) and
`safetensors_files() -> list[Path]`. Every file it hands out lies inside the checkpoint folder
(a symlink out of it, or a name with `..`, is refused).

A name that is not a local folder is a Hub repo id. Before any file is fetched, the Hub is asked
once (no retries) whether the repo exists: a mistyped name then fails at once with both facts (no
such folder here, no such repo there) instead of waiting through huggingface_hub's retries for
every file a layout may have. When the Hub cannot be reached (no network, or `HF_HUB_OFFLINE=1`)
the files come from the huggingface_hub cache only, and a repo of which the cache holds nothing
fails at once the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from autodeco_lp.hub.files import CONFIG_NAME, KNOWN_NAMES, OFFICIAL_WEIGHTS_NAME, WEIGHTS_NAME
from autodeco_lp.hub.models import canonical_model_id
from autodeco_lp.hub.registry import find_heads


def check_member_name(name: str, where: str) -> None:
    """A file name a checkpoint may refer to: relative, inside its folder (no `..`, no absolute path)."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise ValueError(
            f"{where} refers to {name!r}, which is outside the checkpoint folder; a checkpoint reads only "
            "files inside its own folder (relative names, no '..')."
        )


class LocalFolder:
    """A checkpoint folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = root.resolve()
        self.description = f"folder {str(root)!r}"

    def _inside(self, path: Path) -> None:
        """Refuse a file whose real path leaves the folder (a symlink out of it). A Hugging Face cache
        snapshot (`models--org--name/snapshots/<commit>`) links into its repo's `blobs`: allowed."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a dangling link or a symlink loop
            raise ValueError(f"{path} is a broken or looping link ({exc}); fix or remove it.") from exc
        allowed = [self.real]
        if self.real.parent.name == "snapshots" and self.real.parent.parent.name.startswith("models--"):
            allowed.append(self.real.parent.parent / "blobs")
        if not any(real == root or root in real.parents for root in allowed):
            raise ValueError(
                f"{path} points outside {self.description} (to {real}); a checkpoint reads only the files "
                "inside its own folder. Copy the file into the folder instead of linking it."
            )

    def get(self, name: str) -> Path | None:
        check_member_name(name, self.description)
        path = self.root / name
        if not (path.exists() or path.is_symlink()):
            return None
        self._inside(path)
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file (a folder, a pipe or a device); remove or replace it.")
        return path

    def safetensors_files(self) -> list[Path]:
        found = []
        for path in sorted(self.root.glob("*.safetensors")):
            if path.is_file():
                self._inside(path)
                found.append(path)
        return found


class HubRepo:
    """A Hub repo read through huggingface_hub: honours `revision`, its cache and `HF_HUB_OFFLINE`.

    Files are fetched one by one by name (never a whole snapshot), so a merged checkpoint costs
    its index and the shards that hold head tensors, never the base weights. With `cache_only`
    (the Hub unreachable) every file comes from the cache, so a missing one costs no request.
    """

    def __init__(
        self, repo_id: str, revision: str | None, cache_dir: str | None, token: str | bool | None, cache_only: bool
    ) -> None:
        self.repo_id, self.revision, self.cache_dir, self.token = repo_id, revision, cache_dir, token
        self.cache_only = cache_only
        self.description = f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
        self._fetched: dict[str, Path | None] = {}  # one request per file name per load

    def get(self, name: str) -> Path | None:
        if name not in self._fetched:
            self._fetched[name] = self._fetch(name)
        return self._fetched[name]

    def _fetch(self, name: str) -> Path | None:
        check_member_name(name, self.description)
        try:
            path = hf_hub_download(
                self.repo_id,
                name,
                revision=self.revision,
                cache_dir=self.cache_dir,
                token=self.token,
                local_files_only=self.cache_only,
            )
        except RevisionNotFoundError as exc:
            raise ValueError(_revision_message(self.repo_id, self.revision)) from exc
        except RepositoryNotFoundError as exc:
            raise ValueError(_no_repo_message(self.repo_id)) from exc
        except (EntryNotFoundError, LocalEntryNotFoundError):
            # LocalEntryNotFoundError: offline (or no network) and the file is not in the cache.
            return None
        return Path(path)

    def safetensors_files(self) -> list[Path]:
        # Listing a repo needs the network; fetch the released file names instead.
        found = [self.get(name) for name in (WEIGHTS_NAME, OFFICIAL_WEIGHTS_NAME)]
        return [path for path in found if path is not None]


def open_source(
    path_or_repo_id: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> LocalFolder | HubRepo:
    """The folder or Hub repo `path_or_repo_id` names; a name that is neither fails here, at once."""
    text = os.fspath(path_or_repo_id) if isinstance(path_or_repo_id, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(f"`path_or_repo_id` has to be a folder path or a Hub repo id, but is {path_or_repo_id!r}")
    if not text.strip():
        raise ValueError(
            "`path_or_repo_id` is empty; pass the folder that holds the heads ('.' for the current folder) "
            "or a Hub repo id (`org/name`)."
        )
    if "\x00" in text:
        raise ValueError(f"`path_or_repo_id` {text!r} contains a NUL character.")
    path = Path(text)
    if path.is_dir():
        return LocalFolder(path)
    if path.is_file():
        raise ValueError(
            f"`path_or_repo_id` {str(path)!r} is a file; pass the folder that holds the heads "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}, or a released layout)."
        )
    # A Hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    if text.count("/") > 1 or text.startswith((".", "/", "~")) or "\\" in text or ".." in text:
        raise ValueError(
            f"`path_or_repo_id` {text!r}: no such folder. Pass an existing folder or a Hub repo id (`org/name`)."
        )
    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise ValueError(
            f"`path_or_repo_id` {text!r}: no such folder, and not a valid Hub repo id ({exc}). "
            "Pass an existing folder or a Hub repo id (`org/name`)."
        ) from exc
    unreachable = _hub_unreachable(text, revision, token)
    if unreachable is None:
        return HubRepo(text, revision, cache_dir, token, cache_only=False)
    cached = [name for name in KNOWN_NAMES if isinstance(_cached(text, name, cache_dir, revision), str)]
    if not cached:
        at = f" at revision {revision!r}" if revision else ""
        raise ValueError(
            f"`path_or_repo_id` {text!r} is not a local folder ({_looked_in(text)}), and the Hub cannot be "
            f"asked for it: {unreachable}, and the huggingface_hub cache ({cache_dir or constants.HF_HUB_CACHE}) "
            f"holds no heads of {text!r}{at}. Check the spelling, pass the path of an existing heads folder, or "
            f"download the repo once while online.{_base_model_hint(text)}"
        )
    return HubRepo(text, revision, cache_dir, token, cache_only=True)


def _cached(repo_id: str, name: str, cache_dir: str | None, revision: str | None):
    """The cached path of one file (a str), or a sentinel/None when the cache does not hold it."""
    return try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)


def _hub_unreachable(repo_id: str, revision: str | None, token: str | bool | None) -> str | None:
    """Why the Hub cannot be asked about `repo_id` (None: it answered, and the repo and revision exist).

    One request without retries (huggingface_hub retries each file download on a connection error,
    which costs ~20 s a file when offline); a repo or revision the Hub says does not exist is a
    `ValueError` here."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        HfApi().repo_info(repo_id, revision=revision, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RevisionNotFoundError as exc:
        raise ValueError(_revision_message(repo_id, revision)) from exc
    except GatedRepoError as exc:
        raise ValueError(
            f"Hub repo {repo_id!r} is gated: accept its terms on the Hub, then pass `token=` (or log in)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ValueError(_no_repo_message(repo_id)) from exc
    except Exception as exc:  # noqa: BLE001 - no connection, a timeout, a proxy, TLS or server error: each
        # transport of huggingface_hub has its own exception types; any of them means "read the cache".
        return f"the Hub is unreachable ({type(exc).__name__}: {exc})"
    return None


def _looked_in(text: str) -> str:
    return f"no {text!r} under {Path.cwd()}"


def _no_repo_message(repo_id: str) -> str:
    return (
        f"{repo_id!r} is neither a local folder ({_looked_in(repo_id)}) nor a Hub repo you can access; check "
        f"the spelling, pass the path of an existing heads folder, or pass `token=` for a private repo."
        f"{_base_model_hint(repo_id)}"
    )


def _revision_message(repo_id: str, revision: str | None) -> str:
    return f"`revision` {revision!r} does not exist in {repo_id!r}; pass an existing branch, tag or commit."


def _base_model_hint(name: str) -> str:
    """For a base model's name passed as heads (`smollm2`): where its registered heads are."""
    entry = find_heads(canonical_model_id(name))
    if entry is None:
        return ""
    return (
        f" {name!r} names a base model; the heads registered for it are {entry.heads!r} (pass those, or pass "
        "no heads to use them)."
    )
