"""Writes that never leave a half-written file or folder in place of a good one.

Everything is written under a temporary sibling name, flushed to disk, then renamed with
`os.replace` (atomic on one file system). Used by checkpoints and the embedded-model cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# A writer receives the temporary path to write to.
Writer = Callable[[Path], None]


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write(path: Path, write: Writer) -> None:
    """Write one file through `write(tmp_path)` to a sibling temporary file, then rename over `path`."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
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
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_file(path)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_files_atomically(folder: Path, writers: dict[str, Writer]) -> Path:
    """Write `{file name: writer}` into `folder`.

    A new folder is staged whole and renamed into place. An existing folder (e.g. a training
    `output_dir`, which holds other things) gets each file replaced atomically, in the order given.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; pass a folder path.")
    if not folder.exists():
        with staged_directory(folder) as staging:
            for name, write in writers.items():
                write(staging / name)
        return folder
    for name, write in writers.items():
        atomic_write(folder / name, write)
    return folder
