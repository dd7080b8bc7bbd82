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
)

SYMBOLS: dict[str, str] = {row.code: row.symbol for row in NAME_TABLE}


def symbol(code: str) -> str:
    """Return the LaTeX symbol for a code name, or the name itself if it has none."""
    base = code[1:] if code.startswith("d") and code[1:] in SYMBOLS and code not in SYMBOLS else code
    if base != code:
        return rf"\partial L/\partial {SYMBOLS[base]}"
    return SYMBOLS.get(code, code)


def markdown_table() -> str:
    """Render the name table as a Markdown table."""
    lines = ["| symbol | meaning | code name |", "| --- | --- | --- |"]
    lines += [f"| ${row.symbol}$ | {row.meaning} | `{row.code}` |" for row in NAME_TABLE]
    return "\n".join(lines)


__all__ = ["NAME_TABLE", "SYMBOLS", "Name", "markdown_table", "symbol"]
