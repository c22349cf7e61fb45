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


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("shape", [(1, 40000), (5, 40000), (2, 3, 20000), (7, 3), (2, 0), (0, 5)])
def test_blocks_sort_like_one_thread(shape, threads):
    rng = np.random.default_rng(0)
    array = rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
    want = np.sort(array, axis=-1)
    view = array  # sorted in place: the same memory holds the result
    sort_rows_inplace(array, threads=threads)
    assert view is array and np.array_equal(array, want)


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
    base = np.random.default_rng(1).integers(0, 100, size=(6, 40000), dtype=np.int64)
    view = base[::2]  # rows 0, 2, 4: not C-contiguous as a whole
    want = np.sort(view, axis=-1)
    sort_rows_inplace(view, threads=3)
    assert np.array_equal(base[::2], want)


def _child(queue) -> None:
    array = np.random.default_rng(2).integers(0, 1000, size=(4, 40000), dtype=np.int64)
    want = np.sort(array, axis=-1)
    sort_rows_inplace(array, threads=2)
    queue.put(bool(np.array_equal(array, want)))


def test_a_forked_child_makes_its_own_pool():
    sort_rows_inplace(np.zeros((4, 40000), dtype=np.int64), threads=2)  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0 and queue.get(timeout=5)
