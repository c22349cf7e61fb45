"""Publishing heads: `AutoDecoHeads.push_to_hub` and `autodeco push`, without a network.

The public `HfApi` calls that reach the Hub are replaced and recorded: `create_repo` (answers with
the repo's URL), `create_branch` and `upload_folder`, whose stand-in selects the files of the
staged folder with huggingface_hub's own `filter_repo_objects` (what the real call uploads).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import CommitInfo, HfApi, RepoUrl, constants
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load as safe_load

from autodeco_lp.cli.main import autodeco
from autodeco_lp.hub.checkpoint import export_official
from autodeco_lp.training.args import FitArgs
from autodeco_lp.training.model_card import hardware, write_model_card
from tests.conftest import random_heads


class FakeHub:
    """What reached the Hub: the calls made (name, keyword arguments) and the files uploaded."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            full = repo_id if "/" in repo_id else f"me/{repo_id}"  # a bare name lands in the caller's namespace
            return RepoUrl(f"{constants.ENDPOINT}/{full}")

        def create_branch(api, repo_id, **kwargs):
            hub.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        def upload_folder(api, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            hub.calls.append(("upload_folder", {"repo_id": repo_id, "allow_patterns": allow_patterns, **kwargs}))
            folder = Path(folder_path)
            names = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
            for name in filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
                hub.uploaded[name] = (folder / name).read_bytes()
            return CommitInfo(
                commit_url=f"{constants.ENDPOINT}/{repo_id}/commit/{'0' * 40}",
                commit_message=kwargs.get("commit_message"),
                commit_description="",
                oid="0" * 40,
                pr_url=f"{constants.ENDPOINT}/{repo_id}/discussions/1" if kwargs.get("create_pr") else None,
            )

        for name, fake in (
            ("create_repo", create_repo),
            ("create_branch", create_branch),
            ("upload_folder", upload_folder),
        ):
            monkeypatch.setattr(HfApi, name, fake)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def hub(monkeypatch):
    return FakeHub(monkeypatch)


def _saved(heads, folder: Path) -> dict[str, bytes]:
    heads.save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _same_files(uploaded: dict[str, bytes], expected: dict[str, bytes]) -> bool:
    """Same names and contents; a safetensors file compared by tensors and metadata (its header's key
    order is not fixed from one save to the next)."""
    if sorted(uploaded) != sorted(expected):
        return False
    for name, content in expected.items():
        if not name.endswith(".safetensors"):
            if uploaded[name] != content:
                return False
            continue
        got, want = safe_load(uploaded[name]), safe_load(content)
        if got.keys() != want.keys() or not all(torch.equal(got[k], want[k]) for k in want):
            return False
        if _metadata(uploaded[name]) != _metadata(content):
            return False
    return True


def _metadata(content: bytes) -> dict:
    size = int.from_bytes(content[:8], "little")  # safetensors: u64 header length, then the JSON header
    return json.loads(content[8 : 8 + size]).get("__metadata__", {})


def test_push_to_hub_uploads_exactly_the_saved_files_and_a_card(hub, tmp_path):
    heads = random_heads()
    heads.config.base_model_name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    info = heads.push_to_hub("org/my-heads")
    assert hub.names() == ["create_repo", "upload_folder"]
    assert hub.calls[0][1] == {"repo_id": "org/my-heads", "private": None, "exist_ok": True}
    commit = hub.calls[1][1]
    assert commit["repo_id"] == "org/my-heads" and commit["revision"] is None and not commit["create_pr"]
    assert commit["commit_message"] == "Upload AutoDeco heads"
    assert commit["allow_patterns"] == ["README.md", "autodeco_config.json", "autodeco_heads.safetensors"]
    assert info.commit_url.endswith("org/my-heads/commit/" + "0" * 40)

    saved = _saved(heads, tmp_path / "saved")
    assert sorted(hub.uploaded) == sorted([*saved, "README.md"])
    assert _same_files({name: hub.uploaded[name] for name in saved}, saved)  # what save_pretrained writes
    card = hub.uploaded["README.md"].decode()
    assert card.startswith("---\nlibrary_name: autodeco_lp\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert 'AutoDeco.from_pretrained(model, "org/my-heads")' in card


def test_push_options_reach_the_hub_calls(hub, tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# my card\n", encoding="utf-8")
    random_heads().push_to_hub(
        "my-heads", model_card=card, private=True, revision="v1", commit_message="first heads", create_pr=True
    )
    assert hub.names() == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1]["private"] is True
    assert hub.calls[1][1] == {"repo_id": "me/my-heads", "branch": "v1", "exist_ok": True}
    commit = hub.calls[2][1]
    assert commit["repo_id"] == "me/my-heads" and commit["revision"] == "v1" and commit["create_pr"]
    assert commit["commit_message"] == "first heads"
    assert hub.uploaded["README.md"] == b"# my card\n"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"repo_id": "a/b/c"}, ValueError, r"`repo_id` 'a/b/c' is not a valid Hub repo id"),
        ({"repo_id": "has space/x"}, ValueError, r"`repo_id` 'has space/x' is not a valid Hub repo id"),
        ({"repo_id": 3}, TypeError, r"`repo_id` has to be a Hub repo id string"),
        ({"repo_id": "org/x", "model_card": "nowhere.md"}, ValueError, r"`model_card` 'nowhere.md' is not a file"),
    ],
)
def test_bad_arguments_are_refused_before_the_hub(hub, kwargs, error, match):
    with pytest.raises(error, match=match):
        random_heads().push_to_hub(**kwargs)
    assert hub.calls == []


def test_offline_mode_is_refused_before_the_hub(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"cannot push to 'org/x': HF_HUB_OFFLINE is set"):
        random_heads().push_to_hub("org/x")
    assert hub.calls == []


def test_autodeco_push_uploads_a_fit_folder_with_its_card_and_nothing_else(hub, tmp_path):
    out = tmp_path / "out"
    heads = random_heads()
    saved = _saved(heads, out)
    (out / "README.md").write_text("# card of the fit\n", encoding="utf-8")
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    (out / "checkpoint-5").mkdir()
    (out / "checkpoint-5" / "autodeco_heads.safetensors").write_bytes(b"old")
    result = CliRunner().invoke(autodeco, ["push", "--heads", str(out), "--repo-id", "org/fit"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"pushed {out} to {constants.ENDPOINT}/org/fit/commit/{'0' * 40}"
    assert _same_files(hub.uploaded, {**saved, "README.md": b"# card of the fit\n"})


def test_autodeco_push_converts_a_released_layout_to_the_native_one(hub, tmp_path):
    heads = random_heads()
    export_official(heads.config, heads.state_dict(), tmp_path / "official")
    result = CliRunner().invoke(autodeco, ["push", "--heads", str(tmp_path / "official"), "--repo-id", "org/x"])
    assert result.exit_code == 0, result.output
    assert sorted(hub.uploaded) == ["README.md", "autodeco_config.json", "autodeco_heads.safetensors"]
    assert "AutoDeco heads" in hub.uploaded["README.md"].decode()


def test_autodeco_push_errors_are_one_line(hub, tmp_path):
    result = CliRunner().invoke(autodeco, ["push", "--heads", str(tmp_path / "nothing" / "here"), "--repo-id", "o/x"])
    assert result.exit_code == 1 and "no such folder" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(autodeco, ["push", "--heads", str(tmp_path)])
    assert result.exit_code == 1 and "`--repo-id` is required" in result.output
    assert hub.calls == []


def test_the_model_card_names_the_hardware_plainly():
    assert hardware(1, "cpu") == "1 x cpu"
    assert hardware(2, "cpu", "MULTI_CPU") == "2 x cpu, MULTI_CPU"


def test_the_fit_card_records_the_hardware_and_how_to_publish(tmp_path):
    args = FitArgs(model="smollm2", data="d.jsonl", output_dir=str(tmp_path)).resolved(135_000_000)  # as fit passes it
    dataset = SimpleNamespace(
        source="d.jsonl", sha256="ab" * 32, examples=[1, 2], num_targets=9, skipped_empty=0, truncated=0
    )
    result = SimpleNamespace(
        steps=3,
        cached=False,
        seconds=12.0,
        loss=1.0,
        temperature_loss=0.5,
        top_p_loss=0.5,
        mean_temperature=0.9,
        mean_top_p=0.8,
    )
    write_model_card(tmp_path, args, dataset, result, "autodeco fit ...", 1, torch.device("cpu"), "NO")
    card = (tmp_path / "README.md").read_text()
    assert "| training time | 12 s on 1 x cpu |" in card and "(NO)" not in card
    assert card.startswith("---\nlibrary_name: autodeco_lp\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert f"autodeco push --heads {tmp_path.as_posix()} --repo-id YOU/NAME" in card
