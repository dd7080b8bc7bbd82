"""The one place a random test batch is made: tests, the grader's cases and chapter 9's battery use it."""

from __future__ import annotations

import numpy as np

from ._validate import param_shape

__all__ = ["random_batch"]


def random_batch(seed, shape, scale=1.0, offset=0.0, *, channel_shift=True, gamma_spread=0.0, dtype=np.float64):
    """(x, gamma, beta, dy): x = offset + scale * (noise + a shift per channel), gamma of both signs, random beta and dy.

    `channel_shift=False` leaves the channel means equal; `gamma_spread > 0` draws gamma near its
    initial value instead, 1 + gamma_spread * noise. The draws come in a fixed order from
    `np.random.default_rng(seed)`, so a seed names one batch.
    """
    shape = _check_shape(shape)
    if not gamma_spread >= 0:
        raise ValueError(f"gamma_spread must be a number >= 0; got {gamma_spread!r}")
    rng = np.random.default_rng(seed)
    C = shape[1]
    shift = rng.normal(size=param_shape(len(shape), C)) if channel_shift else 0.0
    x = offset + scale * (rng.standard_normal(shape) + shift)
    gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C)
    beta = rng.normal(size=C)
    if gamma_spread > 0:
        gamma = 1.0 + gamma_spread * rng.standard_normal(C)
    dy = rng.standard_normal(shape)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype), dy.astype(dtype)


def _check_shape(shape) -> tuple[int, ...]:
    """A batch shape (N, C, ...) of positive integers."""
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape must be (N, C, ...) with at least two positive integers; got {shape}")
    return shape
