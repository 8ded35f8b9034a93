"""Large outputs come from a pool of buffers already written to (runtime/buffers.py): a buffer is
reused only once no array refers to it, never while a result or a view of it is alive."""
from __future__ import annotations

import numpy as np
import pytest

from dsl import kernel
from runtime import buffers


@kernel
def doubled(x: f32[n]) -> f32[n]:
    return x * 2.0


@pytest.fixture
def small_pool(monkeypatch):
    """Pool outputs from 4 KiB, so that small arrays exercise it."""
    monkeypatch.setattr(buffers, "MIN_BYTES", 4096)
    buffers.clear()
    yield
    buffers.clear()


def test_a_dropped_result_is_reused_and_a_live_one_never(small_pool):
    x = np.arange(10_000, dtype=np.float32)
    first = doubled(x)
    address = first.ctypes.data
    assert address % buffers.ALIGN == 0 and not first.flags.owndata
    np.testing.assert_array_equal(first, x * 2)
    del first
    second = doubled(x + 1)
    assert second.ctypes.data == address, "a buffer no array refers to is handed out again"
    np.testing.assert_array_equal(second, (x + 1) * 2)
    view = second[100:200]
    del second
    third = doubled(x + 2)
    assert not np.shares_memory(third, view), "a view keeps its buffer out of the pool"
    np.testing.assert_array_equal(view, (x[100:200] + 1) * 2)
    np.testing.assert_array_equal(third, (x + 2) * 2)
    results = [doubled(x + k) for k in range(5)]      # all alive at once: five buffers
    for k, r in enumerate(results):
        np.testing.assert_array_equal(r, (x + k) * 2)
    assert len({r.ctypes.data for r in results}) == 5


def test_small_and_huge_outputs_are_plain_arrays(small_pool, monkeypatch):
    small = buffers.empty((100,), np.float32)             # 400 bytes
    assert small.flags.owndata
    monkeypatch.setattr(buffers, "MAX_BYTES", 1 << 16)
    huge = buffers.empty((1 << 15,), np.float64)           # 256 KiB > MAX_BYTES
    assert huge.flags.owndata


def test_the_pool_keeps_a_bounded_number_of_buffers(small_pool, monkeypatch):
    monkeypatch.setattr(buffers, "MAX_BUFFERS", 3)
    held = [buffers.empty((2048,), np.float32) for _ in range(6)]   # all in use
    assert len(buffers._pool) == 3
    assert len({a.ctypes.data for a in held}) == 6
    a = buffers.empty((2048,), np.float32)
    assert not any(np.shares_memory(a, h) for h in held)
    b = buffers.empty((4096, 3), np.float64)               # too big for any buffer here
    assert b.shape == (4096, 3) and b.dtype == np.float64 and b.flags.c_contiguous
