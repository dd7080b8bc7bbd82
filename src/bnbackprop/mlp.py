"""A small numpy MLP trained with the book's own batch-norm forward and backward.

Hidden layer i computes z = a @ W_i (+ b_i without batch norm), then batch norm (optional), then
ReLU; the last layer gives logits for a softmax cross-entropy. With batch norm, the bias b_i is
left out: beta_i takes its place, and a bias before batch norm would be removed by the centering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import autograd.numpy as anp
import numpy as np

from ._validate import check_eps, is_real_number
from .batchnorm import backward, forward, forward_eval, update_running_stats
from .reference import normalize_plain


def _check_count(v, name: str, minimum: int = 1) -> int:
    """A whole number >= minimum."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}; got {v!r}")
    return int(v)


def make_spirals(n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """CS231n's spirals: `classes` arms in the plane; returns X of shape (n, 2) and integer labels (n,)."""
    n_per_class = _check_count(n_per_class, "n_per_class", 2)
    classes = _check_count(classes, "classes", 2)
    if not is_real_number(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, n_per_class), classes)
    labels = np.repeat(np.arange(classes), n_per_class)
    t = labels * 4.0 + r * 4.0 + noise * rng.standard_normal(r.size)
    X = np.column_stack([r * np.sin(t), r * np.cos(t)])
    order = rng.permutation(r.size)
    return X[order], labels[order]


def init_params(sizes=(2, 64, 64, 3), use_bn: bool = True, weight_scale: float | None = None, seed: int = 0):
    """He-initialised weights (or N(0, weight_scale^2)); gamma = 1, beta = 0 with batch norm, biases 0 without."""
    sizes = tuple(_check_count(n, "every layer size") for n in sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size; got {sizes!r}")
    if weight_scale is not None and (not is_real_number(weight_scale) or weight_scale <= 0):
        raise ValueError(f"weight_scale must be a number > 0 or None (He initialisation); got {weight_scale!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        std = np.sqrt(2.0 / m) if weight_scale is None else weight_scale
        params[f"W{i}"] = std * rng.standard_normal((m, n))
        hidden = i < len(sizes) - 1
        if hidden and use_bn:
            params[f"gamma{i}"], params[f"beta{i}"] = np.ones(n), np.zeros(n)
        else:
            params[f"b{i}"] = np.zeros(n)
    return params


def uses_bn(params) -> bool:
    """True if the parameters hold batch-norm layers."""
    return "gamma1" in params


def n_layers(params) -> int:
    """Number of weight matrices."""
    return sum(1 for k in params if k.startswith("W"))


def _check_batch(params, X, labels):
    """X of shape (n, input size) and integer labels in range, matching n."""
    X = np.asarray(X, dtype=float)
    labels = np.asarray(labels)
    if not isinstance(params, dict) or "W1" not in params:
        raise ValueError("params must be a dict from init_params, with W1, W2, ...")
    if X.ndim != 2 or X.shape[1] != params["W1"].shape[0]:
        raise ValueError(f"X has shape {X.shape}; expected (n, {params['W1'].shape[0]})")
    K = params[f"W{n_layers(params)}"].shape[1]
    if labels.shape != (X.shape[0],) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels must be {X.shape[0]} whole numbers in [0, {K}); got shape {labels.shape}")
    return X, labels


def _softmax_xent(logits, labels):
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    n = labels.size
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    p[np.arange(n), labels] -= 1.0
    return loss, p / n


def loss_and_grads(params, X, labels, eps: float = 1e-5):
    """Training-mode forward and hand-written backward: (loss, grads, caches) with grads keyed like params."""
    X, labels = _check_batch(params, X, labels)
    eps, L, bn_on = check_eps(eps), n_layers(params), uses_bn(params)
    a, tape = X, []
    for i in range(1, L):
        z = a @ params[f"W{i}"]
        cache = None
        if bn_on:
            z, cache = forward(z, params[f"gamma{i}"], params[f"beta{i}"], eps=eps)
        else:
            z = z + params[f"b{i}"]
        tape.append((a, z, cache))
        a = np.maximum(z, 0.0)
    loss, dlogits = _softmax_xent(a @ params[f"W{L}"] + params[f"b{L}"], labels)
    grads = {f"W{L}": a.T @ dlogits, f"b{L}": dlogits.sum(axis=0)}
    da = dlogits @ params[f"W{L}"].T
    for i in range(L - 1, 0, -1):
        a_in, z, cache = tape[i - 1]
        dz = da * (z > 0)
        if bn_on:
            dz, grads[f"gamma{i}"], grads[f"beta{i}"] = backward(dz, cache)
        else:
            grads[f"b{i}"] = dz.sum(axis=0)
        grads[f"W{i}"] = a_in.T @ dz
        da = dz @ params[f"W{i}"].T
    return loss, grads, [c for _, _, c in tape]


def loss_plain(params, X, labels, eps: float = 1e-5):
    """The same training-mode loss in autograd.numpy, batch norm from its definition: the independent reference."""
    L, bn_on = n_layers(params), uses_bn(params)
    a = X
    for i in range(1, L):
        z = anp.dot(a, params[f"W{i}"])
        if bn_on:
            g, b = (anp.reshape(params[f"{k}{i}"], (1, -1)) for k in ("gamma", "beta"))
            z = normalize_plain(z, g, b, (0,), eps, 0)
        else:
            z = z + params[f"b{i}"]
        a = anp.maximum(z, 0.0)
    logits = anp.dot(a, params[f"W{L}"]) + params[f"b{L}"]
    logits = logits - anp.max(logits, axis=1, keepdims=True)
    logp = logits - anp.log(anp.sum(anp.exp(logits), axis=1, keepdims=True))
    return -anp.mean(logp[np.arange(len(labels)), labels])


def predict(params, X, running=None, eps: float = 1e-5):
    """Eval-mode class predictions: batch norm with the running statistics, so any batch size works."""
    X, _ = _check_batch(params, X, np.zeros(len(X), dtype=int))
    L, bn_on = n_layers(params), uses_bn(params)
    if bn_on and running is None:
        raise ValueError("a batch-norm model needs its running statistics to predict: pass running=")
    a = X
    for i in range(1, L):
        z = a @ params[f"W{i}"]
        if bn_on:
            z, _ = forward_eval(z, params[f"gamma{i}"], params[f"beta{i}"], *running[i - 1], eps=eps)
        else:
            z = z + params[f"b{i}"]
        a = np.maximum(z, 0.0)
    return np.argmax(a @ params[f"W{L}"] + params[f"b{L}"], axis=1)


@dataclass
class History:
    """What training recorded: loss per step, test accuracy per evaluation, final parameters."""

    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    running: list = field(default_factory=list)


def train(params, X, labels, X_test, labels_test, steps: int = 300, lr: float = 0.5,
          batch_size: int = 64, eval_every: int = 25, seed: int = 0, eps: float = 1e-5) -> History:
    """Minibatch SGD with the hand-written backward; running statistics kept PyTorch's way."""
    X, labels = _check_batch(params, X, labels)
    X_test, labels_test = _check_batch(params, X_test, labels_test)
    steps, eval_every = _check_count(steps, "steps"), _check_count(eval_every, "eval_every")
    batch_size = _check_count(batch_size, "batch_size", 2)
    if not is_real_number(lr) or lr <= 0:
        raise ValueError(f"lr must be a number > 0; got {lr!r}")
    rng = np.random.default_rng(seed)
    params = {k: v.copy() for k, v in params.items()}
    widths = [params[f"W{i}"].shape[1] for i in range(1, n_layers(params))]
    running = [(np.zeros(n), np.ones(n)) for n in widths] if uses_bn(params) else []
    hist = History(params=params, running=running)
    for step in range(1, steps + 1):
        idx = rng.choice(len(X), size=min(batch_size, len(X)), replace=False)
        loss, grads, caches = loss_and_grads(params, X[idx], labels[idx], eps)
        for k in params:
            params[k] -= lr * grads[k]
        running[:] = [update_running_stats(*r, c) for r, c in zip(running, caches)] if running else []
        hist.losses.append(float(loss))
        if step % eval_every == 0 or step == steps:
            hist.eval_steps.append(step)
            hist.accuracies.append(float(np.mean(predict(params, X_test, running or None, eps) == labels_test)))
    return hist


__all__ = ["History", "init_params", "loss_and_grads", "loss_plain", "make_spirals", "n_layers", "predict", "train", "uses_bn"]
