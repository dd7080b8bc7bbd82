"""The book's one name table: math symbol, meaning, and code name."""

from __future__ import annotations

from typing import NamedTuple


class Name(NamedTuple):
    """One row of the name table."""

    code: str
    symbol: str
    meaning: str


NAME_TABLE: tuple[Name, ...] = (
    Name("x", r"x", "input batch, shape (N, D) or (N, C, ...)"),
    Name("B", r"B", "values per channel that are reduced over (N, or N·H·W for NCHW)"),
    Name("mu", r"\mu", "batch mean per channel"),
    Name("xmu", r"\bar{x}", "centered input, x - mu"),
    Name("xmusq", r"\bar{x}^2", "squared centered input"),
    Name("var", r"\sigma^2", "batch variance per channel (divides by B - ddof)"),
    Name("vareps", r"\sigma^2+\epsilon", "variance plus eps"),
    Name("eps", r"\epsilon", "small constant that keeps the division finite"),
    Name("std", r"s", "standard deviation, sqrt(var + eps)"),
    Name("ivar", r"s^{-1}", "inverse standard deviation, 1 / s"),
    Name("xhat", r"\hat{x}", "normalized input, xmu / s"),
    Name("gamma", r"\gamma", "per-channel scale"),
    Name("beta", r"\beta", "per-channel shift"),
    Name("gxhat", r"\gamma\hat{x}", "scaled normalized input"),
    Name("y", r"y", "output, gamma * xhat + beta"),
    Name("dy", r"\partial L/\partial y", "upstream gradient arriving at y"),
    Name("g", r"g", "gamma * dy, the gradient arriving at xhat"),
    Name("dx", r"\partial L/\partial x", "gradient of the loss with respect to x"),
    Name("J", r"I - \frac{1}{B}\mathbf{1}\mathbf{1}^\top", "centering matrix"),
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
