"""The grader's battery: the cases a reader's backward runs on, the calling conventions and the tolerances."""

from __future__ import annotations

from dataclasses import dataclass

from ..batches import random_batch

PASS_TOL = 1e-7  # right answer: CS231n expects 1e-8 or less even from finite differences
MATCH_TOL = 1e-8  # a planted bug is named when the reader's outputs equal its outputs to this
CROSS_TOL = 1e-9  # the truth and autograd must agree to this, or the grader itself is broken
OUTPUTS = ("dx", "dgamma", "dbeta")
CONVENTIONS = {
    "cs231n": "backward(dout, cache) -> (dx, dgamma, dbeta)",
    "plain": "backward(x, gamma, beta, dy, eps) -> (dx, dgamma, dbeta)",
}


@dataclass(frozen=True)
class Case:
    """One input of the battery: shape, eps, the data's offset and scale, and why it is there."""

    name: str
    shape: tuple[int, ...]
    eps: float
    offset: float
    scale: float
    seed: int
    why: str

    @property
    def nchw(self) -> bool:
        """True for 4-D input, which a 2-D-only implementation may legitimately refuse."""
        return len(self.shape) > 2

    def data(self):
        """x, gamma, beta and dy: non-zero means (the same for every channel), random gamma and beta, float64."""
        return random_batch(self.seed, self.shape, self.scale, self.offset, channel_shift=False)


CASES = (
    Case("basic", (6, 4), 1e-5, 10.0, 4.0, 101, "non-square (N, D), mean 10, random gamma"),
    Case("wide", (3, 8), 1e-5, -3.0, 2.0, 102, "fewer rows than columns"),
    Case("square", (5, 5), 1e-5, 2.0, 1.5, 103, "square: some axis mistakes only run here"),
    Case("eps0", (7, 3), 0.0, 5.0, 3.0, 104, "eps = 0"),
    Case("eps_large", (8, 3), 0.1, 1.0, 0.5, 105, "eps = 0.1 against a variance near 0.25"),
    Case("B2", (2, 5), 1e-3, 4.0, 2.0, 106, "a batch of two: xhat is nearly +-1 and dx nearly 0"),
    Case("large", (64, 16), 1e-5, -6.0, 3.0, 108, "B = 64, D = 16: a mistake that shows only in larger batches"),
    Case("seed2", (6, 4), 1e-5, 10.0, 4.0, 201, "the basic shape with a second seed"),
    Case("nchw", (4, 3, 2, 5), 1e-5, 3.0, 2.0, 107, "NCHW (N, C, height, width): statistics over N and the pixels"),
    Case("nchw_large", (16, 8, 3, 5), 1e-5, -2.0, 1.5, 109, "a larger NCHW batch: B = N*S = 240 per channel"),
)

__all__ = ["CASES", "CONVENTIONS", "CROSS_TOL", "Case", "MATCH_TOL", "OUTPUTS", "PASS_TOL"]
