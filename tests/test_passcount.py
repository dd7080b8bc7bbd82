"""The pass counter counts what a backward does to whole arrays, and nothing it does not do."""

from __future__ import annotations

import numpy as np
import pytest

from bnbackprop.batches import random_batch
from bnbackprop.batchnorm import backward, backward_staged, forward
from bnbackprop.passcount import count_passes


def make_cache(shape=(7, 4), seed=0):
    x, gamma, beta, dy = random_batch(seed, shape, 2.0, 3.0)
    _, cache = forward(x, gamma, beta)
    return dy, cache


def test_counts_a_hand_made_backward_exactly():
    dy, cache = make_cache()

    def toy(dy, cache):
        t = cache.xhat * dy  # one elementwise pass, one new array
        t += cache.xmu  # one in-place pass
        s = t.sum(axis=0, keepdims=True)  # one reduction
        u = t.copy()  # one copy
        return u, s * cache.s, s  # s * cache.s: a small call

    c = count_passes(toy, dy, cache)
    assert (c.elementwise, c.reductions, c.copies, c.new_arrays, c.small) == (2, 1, 1, 2, 1)
    assert c.passes == 4 and c.calls == 5


def test_counting_does_not_change_the_result():
    dy, cache = make_cache((5, 3, 2, 2), seed=1)
    seen = {}

    def spy(dy, cache):
        seen["out"] = backward(dy, cache)
        return seen["out"]

    count_passes(spy, dy, cache)
    for got, want in zip(seen["out"], backward(dy, cache)):
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("shape", [(6, 5), (3, 2, 4, 4)])
def test_counts_do_not_depend_on_the_shape_or_the_values(shape):
    counts = {count_passes(fn, *make_cache(shape, seed)) for fn in (backward,) for seed in (0, 1)}
    assert len(counts) == 1
    assert count_passes(backward_staged, *make_cache(shape)).passes > count_passes(backward, *make_cache(shape)).passes


def test_bad_input():
    dy, cache = make_cache()
    with pytest.raises(ValueError, match="backward_fn must be a function"):
        count_passes("backward", dy, cache)
    with pytest.raises(ValueError, match="cache must be the Cache"):
        count_passes(backward, dy, {"x": dy})
