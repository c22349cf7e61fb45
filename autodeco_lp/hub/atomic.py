"""Writes that never leave a half-written file or folder in place of a good one.

Everything is written under a temporary name, flushed to disk, then renamed with `os.replace`
(atomic on one file system). Used by checkpoints and the embedded-model cache.

Temporary names are ours and recognisable: `.<name>.tmp-<pid>-<random>`. A save killed before
it could clean up leaves one behind; the next save into the same folder removes it once it is
stale (its process is gone and it is older than `STALE_AFTER_S`, or it is older than a day).
Files and folders get the permissions the umask gives (not `mkstemp`'s owner-only ones).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# A writer receives the temporary path to write to.
Writer = Callable[[Path], None]

STALE_AFTER_S = 300.0
_ABANDONED_AFTER_S = 24 * 3600.0
_TEMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)-[A-Za-z0-9_]{6,}$")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~_umask()


def folder_mode() -> int:
    return 0o777 & ~_umask()


def temp_prefix(name: str) -> str:
    return f".{name}.tmp-{os.getpid()}-"


def make_temp_folder(parent: Path, name: str) -> Path:
    """An empty folder `parent/.<name>.tmp-<pid>-<random>` with umask permissions."""
    path = Path(tempfile.mkdtemp(prefix=temp_prefix(name), dir=parent))
    os.chmod(path, folder_mode())
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep
    return True


def clean_stale_temporaries(parent: Path) -> list[Path]:
    """Remove our temporaries in `parent` left by killed saves: only names we make, never a link,
    and only stale ones (owner process gone and older than `STALE_AFTER_S`, or older than a day)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if not match or entry.is_symlink():
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(match.group(1))
        dead = pid != os.getpid() and not _process_alive(pid)
        if not ((dead and age > STALE_AFTER_S) or age > _ABANDONED_AFTER_S):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write(path: Path, write: Writer) -> None:
    """Write one file through `write(tmp_path)` to a sibling temporary file, then rename over `path`."""
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it owner-only, and a writer may have replaced it
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `target`; on success its files are flushed and it is
    renamed to `target` (which must not exist); on any failure it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target.parent)
    staging = make_temp_folder(target.parent, target.name)
    try:
        yield staging
        for path in staging.rglob("*"):
            if path.is_symlink():
                continue
            # Writers may create files owner-only (safetensors does): give them what the umask says.
            os.chmod(path, folder_mode() if path.is_dir() else file_mode())
            if path.is_file():
                fsync_file(path)
        os.replace(staging, target)
        _fsync_folder(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_files_atomically(folder: Path, writers: dict[str, Writer], commit: str | None = None) -> Path:
    """Write `{file name: writer}` into `folder`, so that a kill at any point leaves the old set of
    files or the new one readable, never a mix.

    A new folder is staged whole and renamed into place. In an existing folder (e.g. a training
    `output_dir`, which holds other things; only the named files are touched) the files are written
    to a staging folder inside it first; then `commit` (the file whose presence says "the other
    files match me", e.g. the config) is moved away, the other files are renamed into place in the
    order given, and `commit` comes last. Readers must therefore accept the other files without
    `commit` (the checkpoint formats embed the config in the weights for that).
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; pass a folder path.")
    if not folder.exists():
        with staged_directory(folder) as staging:
            for name, write in writers.items():
                write(staging / name)
        return folder
    clean_stale_temporaries(folder)
    staging = make_temp_folder(folder, "autodeco")
    moved_away: Path | None = None
    switched: list[str] = []
    try:
        for name, write in writers.items():
            write(staging / name)
            os.chmod(staging / name, file_mode())
            fsync_file(staging / name)
        order = [name for name in writers if name != commit] + ([commit] if commit in writers else [])
        if commit is not None and (folder / commit).exists():
            moved_away = staging / f"old-{commit}"
            os.replace(folder / commit, moved_away)
        for name in order:
            os.replace(staging / name, folder / name)
            switched.append(name)
        _fsync_folder(folder)
        moved_away = None
    except BaseException:
        # A failure we see (not a kill): put the old commit file back while nothing was switched.
        if moved_away is not None and not switched:
            try:
                os.replace(moved_away, folder / commit)
            except OSError:
                pass
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
