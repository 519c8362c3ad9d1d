"""lib.core.runtime: seeds and CPU thread caps."""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from lib.core.runtime import limit_cpu_threads, seed_everything


def test_seed_everything_makes_numpy_and_torch_repeatable():
    seed_everything(3)
    first = (np.random.rand(4), torch.rand(4))
    seed_everything(3)
    second = (np.random.rand(4), torch.rand(4))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_limit_cpu_threads_caps_torch_and_blas():
    import scipy.linalg  # noqa: F401 - load the BLAS libraries before capping them

    before = torch.get_num_threads()
    try:
        with threadpool_limits(2):  # the test session runs with 1 thread: raise it first
            torch.set_num_threads(2)
            assert limit_cpu_threads(None) is None
            assert torch.get_num_threads() == 2
            assert any(pool["num_threads"] == 2 for pool in threadpool_info())
            assert limit_cpu_threads(1) == 1
            assert torch.get_num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
