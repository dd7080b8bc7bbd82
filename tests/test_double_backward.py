"""The double backward against HIPS autograd, finite differences of `backward`, PyTorch (if installed), and its errors."""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from hypothesis import given
from hypothesis import strategies as st

from bnbackprop import mlp
from bnbackprop.batches import random_batch
from bnbackprop.batchnorm import backward, forward
from bnbackprop.double_backward import double_backward, natural_sizes, penalty_and_grads
from bnbackprop.gradcheck import check_vjp
from bnbackprop.reference import autograd_double_backward, batchnorm_plain


def upstream(seed, shape):
    """Random ddx, ddgamma, ddbeta for a batch of this shape."""
    rng = np.random.default_rng(seed + 1000)
    C = shape[1]
    return rng.standard_normal(shape), rng.standard_normal(C), rng.standard_normal(C)


def assert_close(ours, ref, scales, tol):
    """Every output within tol of the reference, relative to the larger of its own size and its natural size."""
    for name, a, b, s in zip(("dx2", "dgamma2", "ddy"), ours, ref, scales):
        assert a.shape == b.shape, name
        size = max(np.abs(b).max(), s)
        assert np.abs(a - b).max() <= tol * size, (name, np.abs(a - b).max() / size)


shapes = st.one_of(
    st.tuples(st.integers(2, 7), st.integers(1, 4)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)).filter(
        lambda s: s[0] * s[2] * s[3] >= 2),
)


@given(shape=shapes, seed=st.integers(0, 2**16), ddof=st.sampled_from([0, 1]),
       eps=st.sampled_from([0.0, 1e-5, 1e-2]), offset=st.sampled_from([0.0, 3.0, -20.0]),
       scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_agrees_with_autograd_to_1e_10(shape, seed, ddof, eps, offset, scale):
    x, gamma, beta, dy = random_batch(seed, shape, scale=scale, offset=offset)
    ddx, ddgamma, ddbeta = upstream(seed, shape)
    _, cache = forward(x, gamma, beta, eps=eps, ddof=ddof)
    ours = double_backward(ddx, ddgamma, ddbeta, dy, cache)
    ref = autograd_double_backward(ddx, ddgamma, ddbeta, dy, x, gamma, beta, eps, ddof)
    assert_close(ours, ref, natural_sizes(gamma, dy, ddx, ddgamma, ddbeta, cache), 1e-10)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5)])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_agrees_with_finite_differences_of_backward(shape, ddof, eps):
    """Random directions: u . (F(v + h w) - F(v - h w)) / 2h against the double backward's u^T J w, for F = backward."""
    rng = np.random.default_rng(7)
    for seed in range(3):
        x, gamma, beta, dy = random_batch(seed, shape, scale=2.0, offset=5.0)
        sizes = (x.size, gamma.size, dy.size)

        def unpack(v):
            return v[:sizes[0]].reshape(x.shape), v[sizes[0]:sizes[0] + sizes[1]], v[sizes[0] + sizes[1]:].reshape(x.shape)

        def first_backward(v):
            xv, gv, dyv = unpack(v)
            return np.concatenate([a.ravel() for a in backward(dyv, forward(xv, gv, beta, eps=eps, ddof=ddof)[1])])

        def vjp(u):
            ddx = u[:x.size].reshape(x.shape)
            ddgamma, ddbeta = u[x.size:x.size + gamma.size], u[x.size + gamma.size:]
            _, cache = forward(x, gamma, beta, eps=eps, ddof=ddof)
            return np.concatenate([a.ravel() for a in double_backward(ddx, ddgamma, ddbeta, dy, cache)])

        check_vjp(first_backward, vjp, np.concatenate([x.ravel(), gamma, dy.ravel()]), rng, tol=1e-7, trials=4, h=1e-5)


def test_a_planted_wrong_rule_fails_the_checks():
    """Dropping the path of xhat through sum(g*xhat) (one edge of the triangle) is caught."""
    x, gamma, beta, dy = random_batch(3, (8, 3), offset=2.0)
    ddx, ddgamma, ddbeta = upstream(3, (8, 3))
    _, cache = forward(x, gamma, beta)
    ref = autograd_double_backward(ddx, ddgamma, ddbeta, dy, x, gamma, beta, 1e-5, 0)
    dx2 = double_backward(ddx, ddgamma, ddbeta, dy, cache)[0]
    g = cache.gamma * dy
    missing = -g * (ddx * cache.xhat).sum(axis=0) / cache.B * cache.inv_s
    wrong = dx2 - (missing - missing.mean(axis=0) - cache.xhat * (missing * cache.xhat).mean(axis=0)) * cache.inv_s
    assert np.abs(dx2 - ref[0]).max() < 1e-12 * np.abs(ref[0]).max()
    assert np.abs(wrong - ref[0]).max() > 0.05 * np.abs(ref[0]).max()


def test_hessian_vector_product_of_the_loss():
    """With ddgamma = ddbeta = 0, dx2 is the Hessian of L = sum(y*dy) in x times ddx."""
    from autograd import hessian_vector_product

    x, gamma, beta, dy = random_batch(5, (2, 3, 3, 2), offset=1.0)
    ddx = np.random.default_rng(5).standard_normal(x.shape)
    _, cache = forward(x, gamma, beta, ddof=1)
    hvp = hessian_vector_product(lambda v: anp.sum(batchnorm_plain(v, gamma, beta, 1e-5, 1) * dy))(x, ddx)
    dx2 = double_backward(ddx, None, None, dy, cache)[0]
    np.testing.assert_allclose(dx2, hvp, rtol=1e-10, atol=1e-12 * np.abs(hvp).max())


def test_ddy_is_the_directional_derivative_of_the_forward():
    """The backward is linear in dy, so d/d(dy) of <ddx, dx> is the forward's derivative along ddx (plus ddgamma, ddbeta)."""
    for seed in range(5):
        x, gamma, beta, dy = random_batch(seed, (7, 4), offset=-3.0, scale=2.0)
        ddx, ddgamma, ddbeta = upstream(seed, x.shape)
        _, cache = forward(x, gamma, beta, eps=1e-3)
        ddy = double_backward(ddx, ddgamma, ddbeta, dy, cache)[2]
        h = 1e-6
        yp = forward(x + h * ddx, gamma + h * ddgamma, beta + h * ddbeta, eps=1e-3)[0]
        ym = forward(x - h * ddx, gamma - h * ddgamma, beta - h * ddbeta, eps=1e-3)[0]
        np.testing.assert_allclose(ddy, (yp - ym) / (2 * h), rtol=1e-6, atol=1e-7)


def test_gradient_penalty_through_the_mlp_agrees_with_autograd():
    X, labels = mlp.make_spirals(30, seed=2)
    for seed in range(3):
        params = mlp.init_params((2, 16, 12, 3), seed=seed)
        rng = np.random.default_rng(seed)
        params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}
        penalty, grads = penalty_and_grads(params, X, labels)

        def plain_penalty(p):
            dX = grad(mlp.loss_plain, 1)(p, X, labels)
            return 0.5 * anp.sum(dX * dX)

        ref = grad(plain_penalty)(params)
        np.testing.assert_allclose(penalty, plain_penalty(params), rtol=1e-12)
        assert set(grads) == set(params)
        for k in params:
            np.testing.assert_allclose(grads[k], ref[k], rtol=1e-9, atol=1e-11 * np.abs(ref[k]).max(), err_msg=k)


def test_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    for shape, eps in (((6, 3), 1e-5), ((3, 2, 4, 3), 1e-3)):
        x, gamma, beta, dy = random_batch(11, shape, offset=2.0)
        ddx, ddgamma, ddbeta = upstream(11, shape)
        tx, tg, tb, tdy = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta, dy))
        y = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=eps)
        firsts = torch.autograd.grad(y, (tx, tg, tb), tdy, create_graph=True)
        second = sum((f * torch.tensor(u)).sum() for f, u in zip(firsts, (ddx, ddgamma, ddbeta)))
        ref = [t.detach().numpy() for t in torch.autograd.grad(second, (tx, tg, tdy))]
        _, cache = forward(x, gamma, beta, eps=eps)
        ours = double_backward(ddx, ddgamma, ddbeta, dy, cache)
        assert_close(ours, ref, natural_sizes(gamma, dy, ddx, ddgamma, ddbeta, cache), 1e-10)


def test_refuses_bad_input():
    x, gamma, beta, dy = random_batch(0, (4, 3))
    _, cache = forward(x, gamma, beta)
    with pytest.raises(ValueError, match="ddx"):
        double_backward(np.ones((4, 2)), None, None, dy, cache)
    with pytest.raises(ValueError, match="ddgamma"):
        double_backward(None, np.ones(4), None, dy, cache)
    with pytest.raises(ValueError, match="ddbeta"):
        double_backward(None, None, [np.nan] * 3, dy, cache)
    with pytest.raises(ValueError, match="dy"):
        double_backward(None, None, None, dy[:2], cache)
    with pytest.raises(ValueError, match="cache"):
        double_backward(None, None, None, dy, (x,))
    with pytest.raises(ValueError, match="batch-norm"):
        penalty_and_grads(mlp.init_params((2, 4, 3), use_bn=False), np.zeros((5, 2)), np.zeros(5, dtype=int))
    zeros = double_backward(None, None, None, dy, cache)
    assert all(np.all(z == 0) for z in zeros)  # zero upstream gives exactly zero: every term is a product with it
