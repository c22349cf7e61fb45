"""`row_sort.sort_rows_inplace`: rows sorted in blocks on a thread pool give the single-thread result, in place,
for any split; a forked child sorts with its own pool (the parent's threads do not exist there)."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autodeco_lp.inference import row_sort
from autodeco_lp.inference.row_sort import sort_rows_inplace


@pytest.fixture(autouse=True)
def many_cpus(monkeypatch):
    """Splits into more blocks than this machine has CPUs (the cap is tested on its own)."""
    monkeypatch.setattr(row_sort, "_usable_cpus", lambda: 64)


def test_threads_are_capped_by_the_cpus_this_thread_may_use(monkeypatch):
    monkeypatch.setattr(row_sort, "_usable_cpus", lambda: 1)  # e.g. a sampling thread pinned to one core
    monkeypatch.setattr(row_sort, "_executor", lambda threads: pytest.fail("no pool for one usable CPU"))
    array = np.random.default_rng(3).integers(0, 9, size=(4, 40000), dtype=np.int64)
    want = np.sort(array, axis=-1)
    sort_rows_inplace(array, threads=8)
    assert np.array_equal(array, want)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("shape", [(1, 40000), (5, 40000), (2, 3, 20000), (7, 3), (2, 0), (0, 5)])
def test_blocks_sort_like_one_thread(shape, threads):
    rng = np.random.default_rng(0)
    array = rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
    want = np.sort(array, axis=-1)
    sort_rows_inplace(array, threads=threads)
    assert np.array_equal(array, want)  # in place: `array` itself holds the result


@given(rows=st.integers(1, 9), width=st.integers(1, 50), threads=st.integers(1, 6), seed=st.integers(0, 99))
def test_any_split_of_small_rows(rows, width, threads, seed):
    array = np.random.default_rng(seed).integers(-5, 5, size=(rows, width), dtype=np.int64)
    want = np.sort(array, axis=-1)
    old = row_sort.MIN_ELEMENTS_PER_BLOCK
    row_sort.MIN_ELEMENTS_PER_BLOCK = 1  # every split, even of tiny rows
    try:
        sort_rows_inplace(array, threads=threads)
    finally:
        row_sort.MIN_ELEMENTS_PER_BLOCK = old
    assert np.array_equal(array, want)


def test_a_non_contiguous_array_is_sorted_in_place():
    base = np.random.default_rng(1).integers(0, 100, size=(4, 6, 20000), dtype=np.int64)
    view = base[::2, ::2]  # rows no reshape can flatten without a copy
    want = np.sort(view, axis=-1)
    sort_rows_inplace(view, threads=3)
    assert np.array_equal(base[::2, ::2], want)


def test_a_replaced_pool_stays_usable_by_whoever_holds_it():
    old = row_sort._executor(2)
    row_sort._executor(3)  # another thread count: a new pool
    assert old.submit(lambda: 1).result(timeout=10) == 1  # a caller still mapping on the old one finishes


def _child(queue) -> None:
    array = np.random.default_rng(2).integers(0, 1000, size=(4, 40000), dtype=np.int64)
    want = np.sort(array, axis=-1)
    sort_rows_inplace(array, threads=2)
    queue.put(bool(np.array_equal(array, want)))


def test_a_forked_child_makes_its_own_pool():
    sort_rows_inplace(np.zeros((4, 40000), dtype=np.int64), threads=2)  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,), daemon=True)
    child.start()
    try:
        child.join(timeout=60)
        assert child.exitcode == 0 and queue.get(timeout=5)  # a child waiting on the parent's threads hangs
    finally:
        if child.is_alive():
            child.kill()


def test_one_pool_per_thread_count_whatever_the_number_of_rows():
    for rows in (2, 3, 5):
        sort_rows_inplace(np.zeros((rows, 40000), dtype=np.int64), threads=4)
        pool = row_sort._pool
    sort_rows_inplace(np.zeros((2, 40000), dtype=np.int64), threads=4)
    assert row_sort._pool is pool  # not rebuilt for 2, 3 or 5 blocks
