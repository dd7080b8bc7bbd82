"""Running the reader's code in a forked child process, so that nothing it does can change the verdict.

The child only computes: it calls the reader's functions on one case and sends back plain arrays
(``.npy`` bytes, loaded with ``allow_pickle=False``) and a small JSON header. The parent keeps the
truth, the tolerances and the verdict, waits with a timeout, and after each case kills the child's
process group (SIGKILL): a child that runs over, and any process the reader's code started and left
running (one that starts a session of its own escapes this). A child that dies by a signal, or exits before sending its result (``sys.exit``,
``os._exit``, a segfault, deep recursion), is reported as such; its stdout goes to stderr, so the
grader's own stdout (a report or JSON) stays clean.

A fork needs no pickling, so functions defined in a notebook cell, closures and lambdas work.
Without ``os.fork`` (Windows), the reader's code runs in a daemon thread of the grader's own
process instead: a timeout then abandons the call (it cannot be killed), and a crash or an exit in
the reader's code ends the grader. The report says so in a note.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import select
import signal
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

FORK = hasattr(os, "fork")  # tests switch it off to exercise the thread fallback
NO_FORK_NOTE = ("this platform has no os.fork: your code ran inside the grader's own process, so a crash "
                "or an exit there ends the grader, and a call that never returns is abandoned, not killed")
JOB_STATUSES = ("ok", "raised", "missing", "broken", "bad_return", "refused")  # what a job's header may say
MAX_TIMEOUT = 3600.0  # seconds; longer waits are almost certainly a typo


@dataclass
class Outcome:
    """What one isolated job gave: kind is ok, raised, timeout, crashed, exited or broken."""

    kind: str
    info: dict = field(default_factory=dict)  # the job's JSON header (kind ok) or why not
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    code: int = 0  # the signal (crashed) or the exit status (exited)


def check_timeout(timeout) -> float:
    """A positive, finite number of seconds up to MAX_TIMEOUT; True and False are refused."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"timeout must be a number of seconds; got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses nan and inf
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}]; got {timeout!r}")
    return float(timeout)


def exc_text(exc: BaseException) -> str:
    """'Type: first line of the message (at file:line)', short enough for one line of a report."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    name = os.path.basename(where[0].filename) if where else ""
    # A notebook cell's file is a temporary name (digits.py, or <...>): no help to the reader, and not stable.
    at = f" (at {name}:{where[0].lineno})" if name and not name.startswith("<") and not name[:-3].isdigit() else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__) + at


def _encode(info: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Header length, JSON header, then each array as .npy bytes with its length."""
    blobs = []
    for name, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        blobs.append((name, buf.getvalue()))
    head = json.dumps({"info": info, "arrays": [[n, len(b)] for n, b in blobs]}).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(b for _, b in blobs)


def _decode(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The inverse of _encode; never unpickles, so a forged message cannot run code here."""
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8:8 + n])
    pos, arrays = 8 + n, {}
    for name, size in head["arrays"]:
        arrays[str(name)] = np.load(io.BytesIO(data[pos:pos + int(size)]), allow_pickle=False)
        pos += int(size)
    if pos != len(data):
        raise ValueError("trailing bytes")
    return head["info"], arrays


def _child(job: Callable[[], tuple[dict, dict]], wfd: int) -> None:
    """In the forked child: run the job, send its result, and leave without running any exit hook."""
    try:
        os.dup2(2, 1)  # the reader's prints go to stderr; the grader's stdout stays a clean report
        sys.stdout = sys.stderr = sys.__stderr__ or open(os.devnull, "w")
        info, arrays = job()
        payload = _encode(info, arrays)
    except BaseException as exc:  # noqa: BLE001 - the job reports the reader's errors itself; this is ours
        payload = _encode({"status": "broken", "message": exc_text(exc)}, {})
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(wfd, view):]
        sys.stderr.flush()
    finally:
        os._exit(0)


def _read_until(rfd: int, pid: int, timeout: float) -> tuple[bytes, int | None]:
    """Read the child's pipe until the child has exited, or the deadline; (data, wait status or None if late).

    Not until EOF: a process the reader's code started inherits the pipe and could hold it open long after
    the child has sent its result, which would turn a right answer into a timeout.
    """
    chunks, deadline, eof = [], time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), None
        if not eof and select.select([rfd], [], [], min(left, 0.05))[0]:
            chunk = os.read(rfd, 1 << 20)
            chunks.append(chunk)
            eof = not chunk
            continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:  # all it wrote is in the pipe now; take what is there, without waiting for a writer it left behind
            while not eof and time.monotonic() < deadline and select.select([rfd], [], [], 0)[0]:
                chunk = os.read(rfd, 1 << 20)
                chunks.append(chunk)
                eof = not chunk
            return b"".join(chunks), status
        if eof:
            time.sleep(0.001)


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group: the child if it still runs, and every process it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone: the child was reaped and started nothing that still runs


def run_forked(job: Callable[[], tuple[dict, dict]], timeout: float) -> Outcome:
    """Run job() in a forked child, in a process group of its own; return what it sent, or how it ended."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        os.setpgid(0, 0)
        _child(job, wfd)
    try:
        os.setpgid(pid, pid)  # also here, so that the group exists before the parent may kill it
    except OSError:
        pass  # the child got there first, or has already exited
    os.close(wfd)
    status = None
    try:
        data, status = _read_until(rfd, pid, timeout)
    finally:
        os.close(rfd)
        _kill_group(pid)  # before reaping, so the group's id cannot have been reused
        if status is None:
            os.waitpid(pid, 0)  # reap the killed child
    if status is None:
        return Outcome("timeout")
    if os.WIFSIGNALED(status):
        return Outcome("crashed", code=os.WTERMSIG(status))
    try:
        info, arrays = _decode(data)
        if not isinstance(info, dict) or info.get("status", "ok") not in JOB_STATUSES:
            raise ValueError("not a status a job sends")  # a forged message: kinds like crashed are the parent's to say
    except Exception:  # noqa: BLE001 - nothing, or not our format: the child ended before returning
        return Outcome("exited", code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
    return Outcome(info.get("status", "ok"), info, arrays)


def run_threaded(job: Callable[[], tuple[dict, dict]], timeout: float) -> Outcome:
    """The fallback without fork: a daemon thread, abandoned on timeout."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = job()
        except BaseException as exc:  # noqa: BLE001
            box["value"] = ({"status": "broken", "message": exc_text(exc)}, {})

    thread = threading.Thread(target=target, name="bnbackprop-grader", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Outcome("timeout")
    info, arrays = box["value"]
    return Outcome(info.get("status", "ok"), info, arrays)


def run_isolated(job: Callable[[], tuple[dict, dict]], timeout: float) -> Outcome:
    """run_forked where the platform can fork, else run_threaded."""
    return run_forked(job, timeout) if FORK else run_threaded(job, timeout)


def binds(fn: Callable, nargs: int) -> bool | None:
    """True if fn can take nargs positional arguments, False if not, None if there is no signature."""
    try:
        inspect.signature(fn).bind(*(None,) * nargs)
    except TypeError:
        return False
    except ValueError:
        return None
    return True


def param_names(fn: Callable) -> list[str]:
    """The names of fn's parameters, or [] if it has no signature."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


__all__ = ["FORK", "MAX_TIMEOUT", "NO_FORK_NOTE", "Outcome", "binds", "check_timeout", "exc_text",
           "param_names", "run_isolated"]


# What the child does: load the reader's functions, call them on one case, pack the outputs.

@dataclass(frozen=True)
class Target:
    """Where the reader's functions come from: given in-process, or imported from a file inside the child."""

    backward: Callable | None = None
    forward: Callable | None = None
    path: str = ""
    name: str = ""
    forward_name: str = ""  # a forward to import from the file ("" for none)

    def load(self) -> tuple[Callable, Callable | None]:
        """(backward, forward or None); a file is imported here, in the child, never in the grader."""
        if not self.path:
            return self.backward, self.forward
        module = import_file(self.path)
        return _get(module, self.name, self.path), (_get(module, self.forward_name, self.path) if self.forward_name else None)


class Missing(LookupError):
    """The reader's file has no function of that name."""


def import_file(path: str):
    """Import the reader's file as a module, with its folder on sys.path for its own imports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: expected a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as a normal import would: dataclasses and lookups by name need it
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec.loader.exec_module(module)
    return module


def _get(module, name: str, path: str) -> Callable:
    """module.name, which must be callable."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise Missing(f"{path} has no function named {name!r}")
    return fn


def _raised(stage: str, exc: BaseException) -> tuple[dict, dict]:
    """A job result for an exception in the reader's code."""
    status = "missing" if isinstance(exc, Missing) else "raised"
    return {"status": status, "stage": stage, "type": type(exc).__name__, "message": exc_text(exc)}, {}


def probe_job(target: Target, find_forward: str = "") -> Callable[[], tuple[dict, dict]]:
    """A job that reports the signatures: how many positional arguments each function takes, and its names."""

    def job():
        try:
            backward, forward = target.load()
        except BaseException as exc:  # noqa: BLE001 - importing the reader's file is reader's code
            return _raised("import", exc)
        if forward is None and find_forward and target.path:
            module = sys.modules.get(os.path.splitext(os.path.basename(target.path))[0])
            found = getattr(module, find_forward, None) if module else None
            forward = found if callable(found) else None
        info = {"status": "ok", "name": getattr(backward, "__name__", "backward"), "params": param_names(backward),
                "binds2": binds(backward, 2), "binds5": binds(backward, 5)}
        if forward is not None:
            info |= {"forward": getattr(forward, "__name__", "forward"), "forward_binds4": binds(forward, 4),
                     "forward_params": param_names(forward)}
        return info, {}

    return job


def _forward_extra(forward: Callable, eps: float):
    """CS231n's bn_param dict, or eps itself when the forward's fourth parameter is named eps."""
    params = param_names(forward)
    return eps if len(params) > 3 and params[3] == "eps" else {"mode": "train", "eps": eps}


def case_job(target: Target, convention: str, data, eps: float, book_cache=None) -> Callable[[], tuple[dict, dict]]:
    """A job that calls the reader's functions on one case and packs (dx, dgamma, dbeta) and y."""
    x, gamma, beta, dy = data

    def job():
        stage = "import"
        try:
            backward, forward = target.load()
            y = None
            if convention == "plain":
                args = (x, gamma, beta, dy, eps)
            elif forward is None:
                args = (dy, book_cache)
            else:
                stage = "forward"
                out = forward(x, gamma, beta, _forward_extra(forward, eps))
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    return {"status": "bad_return", "stage": stage,
                            "message": f"returned a {type(out).__name__}; expected a pair (out, cache)"}, {}
                y, args = out[0], (dy, out[1])
            stage = "backward"
            value = backward(*args)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are findings too
            return _raised(stage, exc)
        return pack_outputs(value, y)

    return job


OUTPUT_NAMES = ("dx", "dgamma", "dbeta")


def pack_outputs(value, y=None) -> tuple[dict, dict]:
    """The reader's return value as plain arrays, converted once here; anything else is described instead."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        n = len(value) if isinstance(value, (tuple, list)) else 1
        return {"status": "bad_return", "stage": "backward",
                "message": f"returned {n} value(s) of type {type(value).__name__}; expected a tuple (dx, dgamma, dbeta)"}, {}
    arrays = {}
    for name, v in zip(OUTPUT_NAMES, value):
        try:
            a = np.asarray(v)
        except Exception as exc:  # noqa: BLE001 - a ragged list, or an object that refuses conversion
            return {"status": "bad_return", "stage": "backward", "message": f"{name} is not an array ({exc_text(exc)})"}, {}
        if a.dtype.kind not in "biufc":
            return {"status": "refused", "stage": "backward",
                    "message": f"{name} came back as an array of {a.dtype} (from {type(v).__name__}), not of numbers"}, {}
        arrays[name] = a
    if y is not None:
        try:
            arrays["y"] = np.asarray(y)
        except Exception:  # noqa: BLE001 - not an array: counts as a wrong y
            arrays["y"] = np.full((), np.nan)
        if arrays["y"].dtype.kind not in "biufc":
            arrays["y"] = np.full((), np.nan)
    return {"status": "ok"}, arrays


__all__ += ["Missing", "Target", "case_job", "import_file", "pack_outputs", "probe_job"]
