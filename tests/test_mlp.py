"""The MLP: its hand-written gradient against finite differences and autograd, scale invariance, training."""

from __future__ import annotations

import numpy as np
import pytest
from autograd import grad

from bnbackprop import mlp
from bnbackprop.gradcheck import numerical_gradient, scaled_error


def small_model(use_bn, seed=0, n=12):
    """A tiny net with random gamma and beta, on spiral points."""
    X, labels = mlp.make_spirals(n // 3, 3, 0.2, seed=seed)
    params = mlp.init_params((2, 5, 4, 3), use_bn=use_bn, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for k in params:
        if k.startswith(("gamma", "beta", "b")):
            params[k] = rng.uniform(0.5, 1.5, params[k].shape) * rng.choice([-1, 1], params[k].shape)
    return params, X, labels


@pytest.mark.parametrize("use_bn", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-1])
def test_whole_mlp_gradient_matches_finite_differences_and_autograd(use_bn, eps):
    params, X, labels = small_model(use_bn)
    _, grads, _ = mlp.loss_and_grads(params, X, labels, eps)
    auto = grad(lambda p: mlp.loss_plain(p, X, labels, eps))(params)
    for k, v in params.items():
        def f(w, k=k):
            return mlp.loss_and_grads({**params, k: w}, X, labels, eps)[0]
        assert scaled_error(grads[k], numerical_gradient(f, v, h=1e-6)) < 1e-6, k
        assert scaled_error(grads[k], auto[k]) < 1e-12, k


def test_loss_matches_the_plain_reference():
    params, X, labels = small_model(True, seed=3)
    loss = mlp.loss_and_grads(params, X, labels)[0]
    np.testing.assert_allclose(loss, mlp.loss_plain(params, X, labels), rtol=1e-13)


@pytest.mark.parametrize("a", [0.01, 3.0, 250.0])
@pytest.mark.parametrize("layer", ["W1", "W2"])
def test_scaling_weights_before_bn_keeps_output_and_divides_gradient(a, layer):
    params, X, labels = small_model(True, seed=1)
    loss, grads, _ = mlp.loss_and_grads(params, X, labels, eps=0.0)
    loss_a, grads_a, _ = mlp.loss_and_grads({**params, layer: a * params[layer]}, X, labels, eps=0.0)
    np.testing.assert_allclose(loss_a, loss, rtol=1e-12)
    np.testing.assert_allclose(grads_a[layer], grads[layer] / a, rtol=1e-8, atol=1e-12 * np.abs(grads[layer]).max() / a)
    np.testing.assert_allclose(grads_a["W3"], grads["W3"], rtol=1e-8, atol=1e-12)


def test_without_bn_scaling_weights_changes_the_loss():
    params, X, labels = small_model(False, seed=1)
    loss = mlp.loss_and_grads(params, X, labels)[0]
    assert abs(mlp.loss_and_grads({**params, "W1": 3.0 * params["W1"]}, X, labels)[0] - loss) > 1e-3


def test_spirals_are_seeded_balanced_and_bounded():
    X, labels = mlp.make_spirals(50, 4, 0.1, seed=7)
    X2, labels2 = mlp.make_spirals(50, 4, 0.1, seed=7)
    assert X.shape == (200, 2) and np.array_equal(np.bincount(labels), [50] * 4)
    assert np.array_equal(X, X2) and np.array_equal(labels, labels2)
    assert np.all(np.linalg.norm(X, axis=1) <= 1.0 + 1e-12)
    assert not np.array_equal(X, mlp.make_spirals(50, 4, 0.1, seed=8)[0])


def test_training_with_bn_learns_the_spirals_from_a_small_init():
    X, labels = mlp.make_spirals(100, 3, 0.2, seed=0)
    Xt, lt = mlp.make_spirals(100, 3, 0.2, seed=1)
    runs = {bn: mlp.train(mlp.init_params((2, 64, 64, 3), bn, 0.05, seed=0), X, labels, Xt, lt,
                          steps=200, lr=0.1, seed=0) for bn in (True, False)}
    assert runs[True].accuracies[-1] > 0.9
    assert np.mean(runs[True].losses[-20:]) < np.mean(runs[True].losses[:20]) / 2
    assert runs[True].accuracies[-1] > runs[False].accuracies[-1] + 0.2
    assert len(runs[True].running) == 2 and np.all(runs[True].running[0][1] > 0)


def test_predict_needs_running_stats_for_bn():
    params, X, _ = small_model(True)
    with pytest.raises(ValueError, match="running statistics"):
        mlp.predict(params, X)
    running = [(np.zeros(5), np.ones(5)), (np.zeros(4), np.ones(4))]
    assert mlp.predict(params, X[:1], running).shape == (1,)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: mlp.make_spirals(1), "n_per_class"),
    (lambda: mlp.make_spirals(10, classes=1.5), "classes"),
    (lambda: mlp.make_spirals(10, noise=-1), "noise"),
    (lambda: mlp.init_params((2,)), "at least an input and an output"),
    (lambda: mlp.init_params((2, 0, 3)), "layer size"),
    (lambda: mlp.init_params(weight_scale=0), "weight_scale"),
    (lambda: mlp.loss_and_grads({}, np.zeros((4, 2)), np.zeros(4, int)), "params must be a dict"),
    (lambda: mlp.loss_and_grads(mlp.init_params(), np.zeros((4, 3)), np.zeros(4, int)), r"expected \(n, 2\)"),
    (lambda: mlp.loss_and_grads(mlp.init_params(), np.zeros((4, 2)), np.full(4, 3)), "labels must be"),
    (lambda: mlp.loss_and_grads(mlp.init_params(), np.zeros((4, 2)), np.zeros(4, int), eps=-1), "eps"),
    (lambda: mlp.train(mlp.init_params(), np.ones((4, 2)), np.zeros(4, int), np.ones((4, 2)),
                       np.zeros(4, int), lr=0), "lr"),
    (lambda: mlp.train(mlp.init_params(), np.ones((4, 2)), np.zeros(4, int), np.ones((4, 2)),
                       np.zeros(4, int), batch_size=1), "batch_size"),
])
def test_bad_input_gets_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
