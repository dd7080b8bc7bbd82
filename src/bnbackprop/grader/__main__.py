"""Grade a batch-norm backward from the command line: `python -m bnbackprop.grader file.py:function`.

Also installed as the command `bnbackprop-check`. The file is imported only in a child process, so
its top-level code cannot touch the grader. Prints the report of `bnbackprop.grader.diagnose_file`,
or with --json the JSON report (schema: `bnbackprop.grader.report.JSON_FIELDS`). Exit code: 0
correct; 1 wrong; 2 usage error (bad arguments, no such file or function); 3 could not run or
refused output; 4 timed out; 5 crashed or exited before returning.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import diagnose_file
from .cases import CONVENTIONS
from .runner import MAX_TIMEOUT, Missing

PROG = "python -m bnbackprop.grader"
USAGE_EXAMPLES = """examples:
  python -m bnbackprop.grader layers.py:batchnorm_backward      (finds batchnorm_forward itself)
  python -m bnbackprop.grader mybn.py:bn_backward --ddof 1 --json
conventions (read off the signature; --convention overrides):
""" + "\n".join(f"  {k:7s} {v}" for k, v in CONVENTIONS.items())


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def seconds(text: str) -> float:
    """--timeout's type: a finite number of seconds in (0, MAX_TIMEOUT]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"expected a number of seconds in (0, {MAX_TIMEOUT:g}]; got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], epilog=USAGE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="path/to/file.py:function_name, your backward")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default=None,
                   help="override the convention read off the signature")
    p.add_argument("--forward", default=None,
                   help="your forward in the same file (cs231n convention); default: batchnorm_forward if the file has one, "
                        "else bnbackprop's forward and Cache")
    p.add_argument("--ddof", type=int, choices=(0, 1), default=None,
                   help="1 if your forward divides the variance by B - 1 (makemore); default: read off your forward, else 0")
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds each case may take (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for course autograders)")
    return p


def split_target(target: str) -> tuple[Path, str]:
    """'dir/file.py:name' -> (path, name), refusing anything else with a clear message."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise UsageError(f"expected path/to/file.py:function_name; got {target!r}")
    if not Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    return Path(path), name


def main(argv: list[str] | None = None) -> int:
    """Run the grader and print its report; return the exit code."""
    args = parser().parse_args(argv)
    try:
        if args.forward is not None and args.convention == "plain":
            raise UsageError("--forward goes with --convention cs231n only")
        if args.forward is not None and not args.forward.isidentifier():
            raise UsageError(f"--forward expects a function name; got {args.forward!r}")
        path, name = split_target(args.target)
        report = diagnose_file(str(path), name, args.convention, args.forward, args.ddof, args.timeout)
    except (UsageError, Missing) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["USAGE_EXAMPLES", "UsageError", "main", "parser", "seconds", "split_target"]
