"""Independent references for the gradients: HIPS autograd on a plain forward, and finite differences.

Nothing here shares code with `bnbackprop.batchnorm`'s backward passes, so agreement means something.
"""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd import grad

from ._validate import count_over, param_shape, reduce_axes
from .gradcheck import numerical_gradient


def normalize_plain(x, gamma_b, beta_b, axes, eps, ddof):
    """Normalization written directly from the definition, in autograd.numpy."""
    B = count_over(x.shape, axes)
    mu = anp.sum(x, axis=axes, keepdims=True) / B
    var = anp.sum((x - mu) ** 2, axis=axes, keepdims=True) / (B - ddof)
    return gamma_b * (x - mu) / anp.sqrt(var + eps) + beta_b


def batchnorm_plain(x, gamma, beta, eps=1e-5, ddof=0):
    """Batch norm over every axis but 1, from the definition."""
    shape = param_shape(x.ndim, x.shape[1])
    return normalize_plain(x, anp.reshape(gamma, shape), anp.reshape(beta, shape), reduce_axes(x.ndim), eps, ddof)


def autograd_backward(dy, x, gamma, beta, eps=1e-5, ddof=0):
    """(dx, dgamma, dbeta) of L = sum(y * dy), by HIPS autograd."""
    dy = np.asarray(dy, dtype=float)

    def loss(x_, gamma_, beta_):
        return anp.sum(batchnorm_plain(x_, gamma_, beta_, eps, ddof) * dy)

    args = [np.asarray(a, dtype=float) for a in (x, gamma, beta)]
    return tuple(grad(loss, i)(*args) for i in range(3))


def finite_difference_backward(dy, x, gamma, beta, eps=1e-5, ddof=0, h=1e-5):
    """(dx, dgamma, dbeta) of L = sum(y * dy), by central differences on the plain forward."""
    dy = np.asarray(dy, dtype=float)
    x, gamma, beta = (np.asarray(a, dtype=float) for a in (x, gamma, beta))
    dx = numerical_gradient(lambda v: np.sum(batchnorm_plain(v, gamma, beta, eps, ddof) * dy), x, h)
    dgamma = numerical_gradient(lambda v: np.sum(batchnorm_plain(x, v, beta, eps, ddof) * dy), gamma, h)
    dbeta = numerical_gradient(lambda v: np.sum(batchnorm_plain(x, gamma, v, eps, ddof) * dy), beta, h)
    return dx, dgamma, dbeta


def autograd_double_backward(ddx, ddgamma, ddbeta, dy, x, gamma, beta, eps=1e-5, ddof=0):
    """(dx2, dgamma2, ddy): autograd differentiates its own first backward of the plain forward."""
    ddx, ddgamma, ddbeta, beta = (np.asarray(a, dtype=float) for a in (ddx, ddgamma, ddbeta, beta))

    def second_loss(x_, gamma_, dy_):
        def first_loss(a, b, c):
            return anp.sum(batchnorm_plain(a, b, c, eps, ddof) * dy_)

        firsts = [grad(first_loss, i)(x_, gamma_, beta) for i in range(3)]
        return sum(anp.sum(f * u) for f, u in zip(firsts, (ddx, ddgamma, ddbeta)))

    args = [np.asarray(a, dtype=float) for a in (x, gamma, dy)]
    return tuple(grad(second_loss, i)(*args) for i in range(3))


__all__ = ["autograd_backward", "autograd_double_backward", "batchnorm_plain", "finite_difference_backward", "normalize_plain"]
