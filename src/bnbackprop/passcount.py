"""Count the passes a backward makes over full-size arrays: a deterministic stand-in for timing it.

A timing depends on the machine and on what else runs on it; the number of numpy calls that read
or write a whole (N, C, ...) array does not. For arrays larger than the cache each such pass costs
about the same memory traffic, so the pass counts of two backwards bound their speed ratio there,
and the count of all numpy calls measures the fixed per-call cost that dominates on small arrays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .batchnorm import Cache

_ARRAY_FIELDS = ("x", "mu", "xmu", "var", "s", "inv_s", "xhat", "gamma")


@dataclass(frozen=True)
class PassCount:
    """What one backward call did: full-size passes by kind, full-size arrays allocated, small calls."""

    elementwise: int  # ufunc calls over whole arrays (a * b, a - b, a += b)
    reductions: int  # sums and means over whole arrays
    copies: int  # explicit whole-array copies
    new_arrays: int  # whole-size results allocated (elementwise calls without out=, and copies)
    small: int  # numpy calls on per-channel arrays only

    @property
    def passes(self) -> int:
        """Every numpy call that reads or writes a whole array."""
        return self.elementwise + self.reductions + self.copies

    @property
    def calls(self) -> int:
        """Every numpy call that was counted, large or small."""
        return self.passes + self.small


class _Counted(np.ndarray):
    """An ndarray that logs each ufunc call it takes part in (subclass views keep the data shared)."""

    log: list | None = None

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        args = [np.asarray(a) if isinstance(a, _Counted) else a for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, _Counted) else o for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        sizes = [np.size(a) for a in inputs] + [np.size(o) for o in (out or ())]
        if _Counted.log is not None:
            _Counted.log.append((method, max(sizes), out is not None))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result.view(_Counted) if isinstance(result, np.ndarray) else result

    def copy(self, order="C"):
        """A whole-array copy is a pass too, though no ufunc runs."""
        if _Counted.log is not None:
            _Counted.log.append(("copy", self.size, False))
        return super().copy(order)


def count_passes(backward_fn: Callable, dy, cache: Cache) -> PassCount:
    """Run `backward_fn(dy, cache)` once and count its numpy calls on the cached arrays.

    Calls on `dy` alone are not seen: the input checks turn `dy` back into a plain array. A call
    that mixes `dy` with a cached array (gamma * dy) is seen.
    """
    if not callable(backward_fn):
        raise ValueError(f"backward_fn must be a function (dy, cache) -> (dx, dgamma, dbeta); got {type(backward_fn).__name__}")
    if not isinstance(cache, Cache):
        raise ValueError(f"cache must be the Cache that bnbackprop.forward returns; got {type(cache).__name__}")
    wrapped = dataclasses.replace(cache, **{f: np.asarray(getattr(cache, f)).view(_Counted) for f in _ARRAY_FIELDS})
    _Counted.log = []
    try:
        backward_fn(dy, wrapped)
    finally:
        log, _Counted.log = _Counted.log, None
    full = [(method, inplace) for method, size, inplace in log if size == cache.x.size]
    elementwise = sum(m == "__call__" for m, _ in full)
    copies = sum(m == "copy" for m, _ in full)
    new = sum(m == "__call__" and not inplace for m, inplace in full) + copies
    reductions = sum(m in ("reduce", "accumulate", "reduceat") for m, _ in full)
    return PassCount(elementwise, reductions, copies, new, len(log) - len(full))


__all__ = ["PassCount", "count_passes"]
