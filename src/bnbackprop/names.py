"""The book's one name table: math symbol, meaning, and code name."""

from __future__ import annotations

from typing import NamedTuple


class Name(NamedTuple):
    """One row of the name table."""

    code: str
    symbol: str
    meaning: str


NAME_TABLE: tuple[Name, ...] = (
    Name("N", r"N", "samples in the batch: the first axis of (N, D) or (N, C, ...)"),
    Name("D", r"D", "features of a 2-D input (N, D), CS231n's letters; axis 1, one statistic each"),
    Name("C", r"C", "channels of an image batch (N, C, ...), the layout PyTorch calls NCHW; axis 1, one statistic each"),
    Name("S", r"S", "spatial positions per sample and channel: the product of the axes after C (height times width "
                    "for an image); W is kept for weights"),
    Name("B", r"B", "values per statistic, reduced over: N for (N, D), N·S for (N, C, ...) (makemore's n); "
                "B_k of them on device k (chapter 8)"),
    Name("K", r"K", "devices a batch is split over in data-parallel training (chapter 8)"),
    Name("G", r"G", "groups of GroupNorm, C/G channels each (chapter 7); the computation graph has no letter"),
    Name("x", r"x", "input batch, shape (N, D) or (N, C, ...)"),
    Name("mu", r"\mu", "batch mean per channel"),
    Name("xmu", r"\bar{x}", "centered input, x - mu"),
    Name("xmusq", r"\bar{x}^2", "squared centered input"),
    Name("var", r"\sigma^2", "batch variance per channel (divides by B - ddof)"),
    Name("vareps", r"\sigma^2+\epsilon", "variance plus eps"),
    Name("eps", r"\epsilon", "small constant that keeps the division finite"),
    Name("s", r"s", "sqrt(var + eps): the divisor, not the standard deviation unless eps = 0"),
    Name("inv_s", r"s^{-1}", "1 / s = 1 / sqrt(var + eps) (PyTorch's invstd; not 1 / var)"),
    Name("xhat", r"\hat{x}", "normalized input, xmu / s"),
    Name("gamma", r"\gamma", "per-channel scale"),
    Name("beta", r"\beta", "per-channel shift"),
    Name("gxhat", r"\gamma\hat{x}", "scaled normalized input"),
    Name("y", r"y", "output, gamma * xhat + beta"),
    Name("dy", r"\partial L/\partial y", "upstream gradient arriving at y"),
    Name("g", r"g", "gamma * dy = dL/dxhat, the gradient arriving at xhat"),
    Name("v", r"v", "dL/dxbar, the gradient arriving at xbar (chapter 3's triangle, taken alone)"),
    Name("dx", r"\partial L/\partial x", "gradient of the loss with respect to x"),
    Name("J", r"I - \frac{1}{B}\mathbf{1}\mathbf{1}^\top", "centering matrix, the Jacobian dxbar/dx; other Jacobians are written d(out)/d(in)"),
    Name("P", r"I - \frac{1}{B}\mathbf{1}\mathbf{1}^\top - \frac{1}{B}\hat{x}\hat{x}^\top", "projection of the backward: dx = P g / s"),
    Name("a", r"a", "a positive scale factor: x -> a x, or W -> a W"),
    Name("u", r"u", "input of a linear layer (chapters 3 and 10)"),
    Name("W", r"W", "weights of the linear layer before batch norm, z = u W (CS231n's W1, W2 in code)"),
    Name("z", r"z", "pre-activation u W: what batch norm normalizes inside a network"),
    Name("sum_g", r"\sum g", "sum of g over the batch, per channel"),
    Name("sum_gxhat", r"\sum g\hat{x}", "sum of g * xhat over the batch, per channel"),
    Name("L2", r"L_2", "second-level loss: sum(ddx*dx) + sum(ddgamma*dgamma) + sum(ddbeta*dbeta)"),
    Name("ddx", r"\delta x", "gradient of L2 with respect to dx, arriving at the backward's output"),
    Name("ddgamma", r"\delta\gamma", "gradient of L2 with respect to dgamma"),
    Name("ddbeta", r"\delta\beta", "gradient of L2 with respect to dbeta"),
    Name("ddy", r"\delta y", "gradient of L2 with respect to dy"),
    Name("dx2", r"\partial L_2/\partial x", "gradient of L2 with respect to x (double backward)"),
    Name("dgamma2", r"\partial L_2/\partial\gamma", "gradient of L2 with respect to gamma (double backward)"),
    Name("m2", r"M_2", "sum of squared deviations from the mean, sum(xmu**2) (Welford, Chan)"),
)

SYMBOLS: dict[str, str] = {row.code: row.symbol for row in NAME_TABLE}


def symbol(code: str) -> str:
    """Return the LaTeX symbol for a code name, or the name itself if it has none."""
    base = code[1:] if code.startswith("d") and code[1:] in SYMBOLS and code not in SYMBOLS else code
    if base != code:
        return rf"\partial L/\partial {SYMBOLS[base]}"
    return SYMBOLS.get(code, code)


def markdown_table(codes=None) -> str:
    """Render the name table (or the rows of the given code names, in table order) as a Markdown table."""
    if codes is not None and not set(codes) <= set(SYMBOLS):
        raise ValueError(f"codes must be code names from the name table; unknown: {sorted(set(codes) - set(SYMBOLS))}")
    rows = [row for row in NAME_TABLE if codes is None or row.code in codes]
    lines = ["| symbol | meaning | code name |", "| --- | --- | --- |"]
    lines += [f"| ${row.symbol}$ | {row.meaning} | `{row.code}` |" for row in rows]
    return "\n".join(lines)


__all__ = ["NAME_TABLE", "SYMBOLS", "Name", "markdown_table", "symbol"]
