"""The one random batch: reproducible by seed, non-trivial, and in the shape and dtype asked for."""

from __future__ import annotations

import numpy as np
import pytest

from bnbackprop.batches import random_batch


@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 2, 5)])
def test_a_seed_names_one_batch(shape):
    a, b, c = random_batch(5, shape), random_batch(5, shape), random_batch(6, shape)
    for u, v, w in zip(a, b, c):
        np.testing.assert_array_equal(u, v)  # same seed, same draws: bitwise equal
        assert not np.array_equal(u, w)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shapes_dtype_and_non_trivial_values(dtype):
    x, gamma, beta, dy = random_batch(0, (50, 6, 3), 2.0, 10.0, dtype=dtype)
    assert x.shape == dy.shape == (50, 6, 3) and gamma.shape == beta.shape == (6,)
    assert {a.dtype for a in (x, gamma, beta, dy)} == {np.dtype(dtype)}
    means = x.mean(axis=(0, 2))
    assert abs(means.mean() - 10.0) < 5 and np.ptp(means) > 0.1  # offset kept, channels shifted apart
    assert (gamma < 0).any() and (gamma > 0).any() and np.all(np.abs(gamma) >= 0.5)


def test_options_change_what_they_say():
    x, _, _, _ = random_batch(1, (4000, 3), 1.0, 2.0, channel_shift=False)
    np.testing.assert_allclose(x.mean(axis=0), 2.0, atol=0.1)
    _, gamma, _, _ = random_batch(1, (5, 400), gamma_spread=0.01)
    assert np.all(np.abs(gamma - 1.0) < 0.1)


@pytest.mark.parametrize("kwargs", [dict(shape=(5,)), dict(shape=(0, 3)), dict(shape=(2.5, 3)),
                                    dict(shape=(4, 3), gamma_spread=-1.0)])
def test_bad_arguments_are_named(kwargs):
    with pytest.raises(ValueError, match="shape|gamma_spread"):
        random_batch(0, **kwargs)
