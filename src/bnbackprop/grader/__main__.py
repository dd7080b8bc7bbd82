"""Grade a batch-norm backward from the command line: `python -m bnbackprop.grader file.py:function`.

Prints the same report as `bnbackprop.grader.diagnose` (also installed as the command `bnbackprop-check`). Exit code 0: correct; 1: wrong, or it
could not be checked; 2: a usage error (bad arguments, no such file or function).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from . import diagnose
from .cases import CONVENTIONS

USAGE_EXAMPLES = """examples:
  python -m bnbackprop.grader layers.py:batchnorm_backward --forward batchnorm_forward
  python -m bnbackprop.grader mybn.py:bn_backward --convention plain --ddof 1
conventions:
""" + "\n".join(f"  {k:7s} {v}" for k, v in CONVENTIONS.items())


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = argparse.ArgumentParser(prog="python -m bnbackprop.grader", description=__doc__.splitlines()[0],
                                epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="path/to/file.py:function_name, your backward")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default="cs231n")
    p.add_argument("--forward", default=None,
                   help="name of your forward in the same file (cs231n convention); default: bnbackprop.forward")
    p.add_argument("--ddof", type=int, choices=(0, 1), default=None,
                   help="1 if your forward divides the variance by B - 1 (makemore); default: read off your forward, else 0")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each call (default 5)")
    return p


def split_target(target: str) -> tuple[Path, str]:
    """'dir/file.py:name' -> (path, name), refusing anything else with a clear message."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise UsageError(f"expected path/to/file.py:function_name; got {target!r}")
    if not Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    return Path(path), name


def load_module(path: Path):
    """Import the reader's file as a module; its own errors become a UsageError-free message."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: expected a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so the reader's file can import its neighbours
    spec.loader.exec_module(module)
    return module


def get_function(module, name: str, path: Path):
    """module.name, which must be callable."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"{path} has no function named {name!r}")
    return fn


def main(argv: list[str] | None = None) -> int:
    """Run the grader and print its report; return the exit code."""
    args = parser().parse_args(argv)
    try:
        if args.forward is not None and args.convention != "cs231n":
            raise UsageError("--forward goes with --convention cs231n only")
        if not args.timeout > 0:
            raise UsageError(f"--timeout must be a positive number of seconds; got {args.timeout}")
        path, name = split_target(args.target)
        try:
            module = load_module(path)
        except UsageError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the reader's file failed to import: say how
            print(f"importing {path} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        backward_fn = get_function(module, name, path)
        forward_fn = get_function(module, args.forward, path) if args.forward else None
    except UsageError as exc:
        print(f"python -m bnbackprop.grader: error: {exc}", file=sys.stderr)
        return 2
    report = diagnose(backward_fn, args.convention, forward_fn, ddof=args.ddof, timeout=args.timeout)
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
