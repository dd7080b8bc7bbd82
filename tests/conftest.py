"""Shared test data: random batches with non-trivial gamma, beta, means and shapes."""

from __future__ import annotations

import numpy as np
from hypothesis import settings

settings.register_profile("book", max_examples=40, deadline=None, derandomize=True, print_blob=True)
settings.load_profile("book")


def random_batch(seed, shape, scale=1.0, offset=0.0, dtype=np.float64):
    """x = offset + scale * noise with per-channel shifts, random gamma and beta, and a random dy."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    channel_shift = rng.normal(size=(1, C) + (1,) * (len(shape) - 2))
    x = offset + scale * (rng.standard_normal(shape) + channel_shift)
    gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C)
    beta = rng.normal(size=C)
    dy = rng.standard_normal(shape)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype), dy.astype(dtype)
