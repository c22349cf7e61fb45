"""Sort the rows of a CPU int64 array in place with numpy, on as many threads as torch uses.

numpy's integer sort is several times faster per row than `torch.sort` on a CPU, but it runs on one
thread, while `torch.sort` spreads the rows over torch's intra-op threads. With two or more threads a
batch of rows would then sort slower than torch's own sort. numpy releases the GIL while it sorts a
numeric array, so the rows are split into one block per thread and the blocks sorted by a pool of as
many threads as torch uses (at most the CPUs this thread may run on).
The result is the same permutation however the rows are split (each row is sorted on its own).

The pool belongs to the process that made it: a forked child (vLLM's workers, DataLoader workers)
inherits no running threads, so it makes its own instead of waiting on threads that do not exist.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# Below this many elements a block is not worth a thread hand-off (~tens of microseconds); one row of a
# 49k vocabulary takes milliseconds to sort.
MIN_ELEMENTS_PER_BLOCK = 1 << 14

_pool: ThreadPoolExecutor | None = None
_pool_owner: tuple[int, int] | None = None  # (pid, threads) the pool was made for


def _executor(threads: int) -> ThreadPoolExecutor:
    """The process's pool of `threads` workers (one per torch thread, whatever the number of blocks)."""
    global _pool, _pool_owner
    owner = (os.getpid(), threads)
    if _pool is None or _pool_owner != owner:
        # Another process (a forked child) or another thread count: a new pool. The old one is dropped, not
        # shut down: a caller in another thread may still be using it, and its idle workers exit once it is
        # garbage collected.
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="autodeco-sort")
        _pool_owner = owner
    return _pool


def _usable_cpus() -> int:
    """CPUs the calling thread may run on (Linux: its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def sort_rows_inplace(array: np.ndarray, threads: int | None = None) -> None:
    """Sort every row (last axis) of `array` in place. Shape `(..., V)`; `threads`: default torch's."""
    if not array.flags.c_contiguous or array.ndim < 2 or array.size == 0:
        array.sort(axis=-1)
        return
    rows = array.reshape(-1, array.shape[-1])  # a view: sorting its blocks sorts `array`
    threads = torch.get_num_threads() if threads is None else threads
    # Pool threads inherit this thread's CPU mask: a sampling thread pinned to one core (vLLM's CPU workers with
    # libgomp/libiomp preloaded) gains nothing from blocks but the hand-off.
    threads = min(threads, _usable_cpus())
    blocks = min(threads, rows.shape[0], max(1, rows.size // MIN_ELEMENTS_PER_BLOCK))
    if blocks <= 1:
        rows.sort(axis=-1)
        return
    # (rows, V) -> `blocks` views of consecutive rows; list() waits for all and re-raises an error
    list(_executor(threads).map(lambda block: block.sort(axis=-1), np.array_split(rows, blocks)))
