"""A heads name that is neither a local folder nor a repo the Hub can give fails at once, naming both facts.

No network here: the "Hub" is either a closed local port (unreachable, as when offline) or a local
HTTP server answering like the Hub does for a repo that does not exist. huggingface_hub retries a
file download on a connection error (1 + 2 + 4 + 8 s before its fourth try), so a bound of a few
seconds tells one request from a retry storm.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from huggingface_hub import constants

from autodeco_lp import AutoDeco, AutoDecoHeads
from autodeco_lp.cli.main import autodeco
from autodeco_lp.hub import source
from tests.conftest import random_heads, same_heads, tiny_llama

FAST_S = 8.0  # far below one retried download (15 s of back-off), far above one refused connection


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused at once


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """The Hub endpoint refuses connections (as when offline); an empty huggingface_hub cache."""
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "hf-cache"


class _NoSuchRepo(BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a repo that does not exist (or is private)."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        type(self).requests.append(self.path)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def hub_without_the_repo(tmp_path, monkeypatch):
    _NoSuchRepo.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)
    yield _NoSuchRepo.requests
    server.shutdown()
    server.server_close()


def _timed(call):
    started = time.perf_counter()
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value), time.perf_counter() - started


def test_a_mistyped_name_fails_at_once_when_the_hub_is_unreachable(unreachable_hub, tmp_path):
    message, seconds = _timed(lambda: AutoDecoHeads.from_pretrained("outt"))
    assert seconds < FAST_S, f"took {seconds:.1f} s: retried"
    assert f"'outt' is not a local folder (no 'outt' under {tmp_path})" in message
    assert "the Hub is unreachable" in message and "holds no heads of 'outt'" in message
    assert "Check the spelling, pass the path of an existing heads folder" in message
    message, seconds = _timed(lambda: AutoDeco.from_pretrained(tiny_llama(), "outt"))
    assert seconds < FAST_S and "is not a local folder" in message and "the Hub is unreachable" in message


def test_hf_hub_offline_fails_at_once_without_asking_the_hub(unreachable_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(source.HfApi, "repo_info", lambda *a, **k: pytest.fail("asked the Hub while offline"))
    message, seconds = _timed(lambda: AutoDecoHeads.from_pretrained("org/outt", revision="v2"))
    assert seconds < FAST_S
    assert "HF_HUB_OFFLINE is set" in message and "holds no heads of 'org/outt' at revision 'v2'" in message


def test_an_unreachable_hub_reads_a_cached_repo_without_retries(unreachable_hub, tmp_path):
    heads = random_heads()
    heads.save_pretrained(tmp_path / "native")
    snapshot = unreachable_hub / "models--me--heads" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (unreachable_hub / "models--me--heads" / "refs").mkdir()
    (unreachable_hub / "models--me--heads" / "refs" / "main").write_text("c" * 40)
    for path in (tmp_path / "native").iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    started = time.perf_counter()
    loaded = AutoDecoHeads.from_pretrained("me/heads")
    assert time.perf_counter() - started < FAST_S  # the layout probe asks for 4 files the repo lacks
    assert same_heads(heads, loaded)


def test_a_repo_the_hub_does_not_have_fails_after_one_request(hub_without_the_repo, tmp_path):
    message, seconds = _timed(lambda: AutoDecoHeads.from_pretrained("org/outt"))
    assert len(hub_without_the_repo) == 1, hub_without_the_repo  # the repo probe only, no file fetched
    assert seconds < FAST_S
    assert f"'org/outt' is neither a local folder (no 'org/outt' under {tmp_path}) nor a Hub repo" in message
    assert "pass `token=` for a private repo" in message


def test_export_with_a_mistyped_heads_name_fails_at_once(unreachable_hub, tmp_path):
    started = time.perf_counter()
    result = CliRunner().invoke(autodeco, ["export", "--heads", "outt", "--out", str(tmp_path / "x")])
    assert time.perf_counter() - started < FAST_S
    assert result.exit_code == 1 and "'outt' is not a local folder" in result.output, result.output
    assert "the Hub is unreachable" in result.output and not (tmp_path / "x").exists()


def test_a_base_model_name_passed_as_heads_points_at_its_registered_heads(unreachable_hub):
    message, _ = _timed(lambda: AutoDecoHeads.from_pretrained("smollm2"))
    assert "'smollm2' names a base model; the heads registered for it are" in message
    assert "smollm2-135m-instruct'" in message


def test_a_name_that_is_no_valid_repo_id_is_refused_before_the_hub(unreachable_hub, monkeypatch):
    monkeypatch.setattr(source.HfApi, "repo_info", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(ValueError, match=r"'my heads': no such folder, and not a valid Hub repo id"):
        AutoDecoHeads.from_pretrained("my heads")
