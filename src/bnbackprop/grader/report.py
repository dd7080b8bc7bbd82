"""The grader's report: per-case results, the verdict in words, as text, as HTML and as JSON.

The JSON report (`Report.to_json`, the CLI's `--json`) has a stable schema, named by its "schema"
field; JSON_FIELDS documents every field, and a test keeps the two in step.
"""

from __future__ import annotations

import html
import json
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bugs import Bug
from .cases import CONVENTIONS, MATCH_TOL, OUTPUTS, Case


@dataclass
class CaseResult:
    """What happened in one case: the status, relative errors per output, and a message."""

    case: Case
    status: str  # one of STATUSES
    errors: dict[str, float] = field(default_factory=dict)
    message: str = ""
    outcome: Any = None  # ("ok", (dx, dgamma, dbeta)) or ("raised", exception) or None
    forward_wrong: bool = False  # the reader's own forward returned a wrong y here
    code: int = 0  # the signal (crashed) or exit status (exited)

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "unsupported")


@dataclass
class Report:
    """The grader's verdict: per-case results, the named mistake if one matched, and notes."""

    convention: str
    ddof: int
    forward: str
    results: list[CaseResult]
    verdict: str  # one of EXIT_CODES
    matches: list[Bug] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str = ""
    detected: str = ""  # how the convention was chosen, e.g. " (from the signature)"

    @property
    def passed(self) -> bool:
        """True when every case that ran gave the right dx, dgamma and dbeta (and y, from your forward)."""
        return self.verdict == "correct" and not any(r.forward_wrong for r in self.results)

    @property
    def failing(self) -> list[str]:
        """Names of the cases that did not pass."""
        return [r.case.name for r in self.results if not r.passed]

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 only for a clean pass (see EXIT_CODES)."""
        return 1 if self.verdict == "correct" and not self.passed else EXIT_CODES[self.verdict]

    def headline(self) -> str:
        """One line: the verdict in words."""
        escape = self._escape_headline()
        if escape:
            return escape
        if self.verdict == "correct" and any(r.forward_wrong for r in self.results):
            return "BACKWARD CORRECT, FORWARD WRONG: dx, dgamma and dbeta are right, but your forward's y is not (see the notes)."
        if self.verdict == "correct" and any(r.status == "unsupported" for r in self.results):
            return "CORRECT: dx, dgamma and dbeta match the true gradients in every case it supports."
        if self.verdict == "correct":
            return "CORRECT: dx, dgamma and dbeta match the true gradients in every case."
        if self.verdict == "known mistake":
            names = " or ".join(b.name for b in self.matches)
            return f"WRONG, known mistake: {names}."
        if self.verdict == "could not run":
            return f"COULD NOT CHECK: {self.problem}"
        return "WRONG, cause not recognised: the outputs match no known mistake. Failing cases: " + ", ".join(self.failing) + "."

    def _escape_headline(self) -> str:
        """The headline of a run that the reader's code cut short, or ''."""
        first = next((r for r in self.results if r.status in ("timeout", "crashed", "exited", "refused")), None)
        if self.verdict == "timed out":
            return f"TIMED OUT: {self.problem}; the remaining cases were not run."
        if self.verdict == "crashed":
            return f"CRASHED (signal {first.code}): {self.problem}."
        if self.verdict == "exited":
            return f"EXITED (code {first.code}) before returning: {self.problem}."
        if self.verdict == "refused":
            return f"REFUSED: {self.problem}."
        return ""

    def evidence(self) -> str:
        """Why the mistake was named: on which cases the reader's function behaved exactly like it."""
        flat = [r for r in self.results if not r.case.nchw]
        raised = sum(r.outcome is not None and r.outcome[0] == "raised" for r in flat)
        text = (f"your function behaves exactly like this planted mistake in all {len(flat)} 2-D cases: "
                f"the same dx, dgamma and dbeta to a relative error of {MATCH_TOL:g}")
        if raised:
            text += f" in {len(flat) - raised}, and an exception where it raises one in {raised}"
        return text

    def _mistake_lines(self) -> list[str]:
        lines = []
        for bug in self.matches:
            lines += [f"  {bug.name}: {bug.explanation}", f"  Read: {bug.section}."]
        if self.matches:
            lines.append(f"  ({self.evidence()})")
        if len(self.matches) > 1:
            lines.append("  These mistakes give identical outputs on this battery; it cannot tell them apart.")
        return lines

    def _table_rows(self) -> list[tuple[str, ...]]:
        rows = []
        for r in self.results:
            errs = [_fmt_err(r.errors[k]) if k in r.errors else "-" for k in OUTPUTS]
            rows.append((r.case.name, str(r.case.shape), f"{r.case.eps:g}", r.status.upper(), *errs))
        return rows

    def __str__(self) -> str:
        head = ("case", "shape", "eps", "result", "dx", "dgamma", "dbeta")
        rows = [head, *self._table_rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            f"bnbackprop.grader: convention '{self.convention}', {CONVENTIONS[self.convention]}{self.detected}",
            f"forward: {self.forward}; variance {_ddof_words(self.ddof)}",
            "",
            self.headline(),
            *self._mistake_lines(),
        ]
        if self.results:
            lines += ["", "relative errors (CS231n rel_error) against the true gradients:"]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        details = [f"  {r.case.name}: {r.message}" for r in self.results if r.message]
        if details:
            lines += ["", "details:", *details]
        if self.notes:
            lines += ["", "notes:", *[f"  {n}" for n in self.notes]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = ",".join(b.name for b in self.matches)
        return f"Report(verdict={self.verdict!r}, matches=[{names}], failing={self.failing})"

    def _repr_html_(self) -> str:
        """The report as an HTML table, for notebooks and the HTML book."""
        esc = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("case", "shape", "eps", "result", *OUTPUTS))
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in self._table_rows())
        items = [f"<li><code>{esc(b.name)}</code>: {esc(b.explanation)} Read: {esc(b.section)}.</li>" for b in self.matches]
        items += [f"<li>Why: {esc(self.evidence())}.</li>" for _ in self.matches[:1]]
        items += [f"<li><code>{esc(r.case.name)}</code>: {esc(r.message)}</li>" for r in self.results if r.message]
        items += [f"<li>{esc(n)}</li>" for n in self.notes]
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if self.results else ""
        return f"<p><strong>{esc(self.headline())}</strong></p>{table}<ul>{''.join(items)}</ul>"


    def to_dict(self) -> dict:
        """The report as plain data with the fields of JSON_FIELDS."""
        from .. import __version__

        return {
            "schema": SCHEMA, "verdict": self.verdict, "passed": self.passed, "exit_code": self.exit_code,
            "headline": self.headline(), "problem": self.problem,
            "mistakes": [{"name": b.name, "explanation": b.explanation, "section": b.section, "sources": list(b.sources)}
                         for b in self.matches],
            "convention": self.convention, "forward": self.forward, "ddof": self.ddof,
            "cases": [{"name": r.case.name, "shape": list(r.case.shape), "eps": r.case.eps, "status": r.status,
                       "errors": {k: _json_float(r.errors.get(k)) for k in OUTPUTS}, "message": r.message}
                      for r in self.results],
            "notes": list(self.notes),
            "versions": {"bnbackprop": __version__, "numpy": np.__version__, "python": platform.python_version()},
        }

    def to_json(self) -> str:
        """The report as JSON text (schema in JSON_FIELDS)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _json_float(e) -> float | None:
    """A relative error for JSON: null where there is none (not run, or a shape mismatch)."""
    return None if e is None or not np.isfinite(e) else float(e)


SCHEMA = "bnbackprop.grader.report/1"
STATUSES = ("pass", "fail", "error", "unsupported", "refused", "timeout", "crashed", "exited", "skipped")
EXIT_CODES = {"correct": 0, "known mistake": 1, "not recognised": 1, "could not run": 3, "refused": 3,
              "timed out": 4, "crashed": 5, "exited": 5}  # 2 is the CLI's usage error
JSON_FIELDS = {
    "schema": "str: the schema's name and version, " + SCHEMA,
    "verdict": "str: one of " + ", ".join(EXIT_CODES),
    "passed": "bool: true only for a clean pass (every case right, and y right when your forward was used)",
    "exit_code": "int: the CLI's exit code: 0 pass, 1 wrong, 2 usage error, 3 could not run or refused, "
                 "4 timed out, 5 crashed or exited",
    "headline": "str: the verdict in one line",
    "problem": "str: why the check could not finish ('' when it did)",
    "mistakes": "list of {name, explanation, section, sources}: the named known mistake(s); [] when none",
    "convention": "str: cs231n or plain",
    "forward": "str: where the cache came from",
    "ddof": "int: 0 (biased variance) or 1 (Bessel's correction)",
    "cases": "list of {name, shape, eps, status, errors: {dx, dgamma, dbeta: float or null}, message}; status is one of "
             + ", ".join(STATUSES),
    "notes": "list of str",
    "versions": "{bnbackprop, numpy, python}: str each",
}


def _fmt_err(e: float) -> str:
    """Relative errors below 1e-12 are rounding; print them alike so reports stay repeatable."""
    if np.isnan(e):
        return "shape"  # rel_error is undefined between arrays of different shapes
    return "<1e-12" if e < 1e-12 else f"{e:.1e}"


def _ddof_words(ddof: int) -> str:
    """Which variance, in words."""
    return "biased, divided by B (ddof=0)" if ddof == 0 else "Bessel-corrected, divided by B - 1 (ddof=1)"


__all__ = ["EXIT_CODES", "JSON_FIELDS", "SCHEMA", "STATUSES", "CaseResult", "Report"]
