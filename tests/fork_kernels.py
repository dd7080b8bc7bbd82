"""Notebook kernels forked from a process that has already imported the kernel and the chapters' libraries.

A kernel started the usual way (`python -m ipykernel_launcher -f <file>`) spends about 0.6 s of CPU
importing ipykernel, numpy, matplotlib and the rest before the notebook's first cell; `make test` starts 28.
Here each pytest worker keeps one server per kernel environment (the plain one and the second numeric one).
The server imports PRELOAD once, with that environment, then forks one child per notebook; the child
sets itself up as launch_kernel and ipykernel_launcher set up a new kernel process (its own session, the
notebook's directory, the kernel manager's environment and arguments, a poller that ends it with its
parent, a newly seeded numpy global generator) and runs the kernel. Each notebook still gets a new process
and a new IPython shell; what the fork saves is the import work, which the child shares copy-on-write.
What stays different: PRELOAD's modules are already in sys.modules at the first cell, the process's
command line and its hash seed are the server's, and stdin is /dev/null rather than an unused pipe.

Used by the root conftest.py on Linux (pidfd lets the worker watch a process it did not start);
elsewhere, or with BNBACKPROP_FORK_KERNELS=0, kernels start the usual way.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from jupyter_client.manager import KernelManager

# Modules every chapter's kernel imports anyway: the kernel's own (its app, its shell and debugger, which it
# imports before the first cell), then numpy, matplotlib's pyplot and HIPS autograd (the chapters' first cells).
# Left out on purpose: bnbackprop (each kernel imports the library fresh, as a reader's does) and ipywidgets
# (its import registers the widget comm targets with the running kernel, so it must run in the kernel).
PRELOAD = ("ipykernel_launcher", "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger", "pdb", "sqlite3",
           "numpy", "matplotlib.pyplot", "autograd.numpy")
# Variables of a kernel's environment that differ from one kernel to the next (the kernel manager's and
# pytest's). Of the preloaded modules only ipykernel.kernelapp reads one at import (JPY_PARENT_PID, the
# default of parent_handle), and become_kernel passes that one explicitly.
PER_KERNEL = frozenset({"JPY_PARENT_PID", "JPY_SESSION_NAME", "PYTEST_CURRENT_TEST"})
LAUNCHER = ("-m", "ipykernel_launcher")
LOST_STATUS = 255  # a kernel's exit code when its server died before it (the status went to init)


def enabled() -> bool:
    """Fork kernels where the worker can watch them (Linux's pidfd), unless BNBACKPROP_FORK_KERNELS=0."""
    if os.environ.get("BNBACKPROP_FORK_KERNELS") == "0" or not hasattr(os, "pidfd_open"):
        return False
    try:  # Linux 5.3 or newer
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


# --- the server: one process per worker and environment --------------------------------------------


def serve(requests, replies) -> dict | None:
    """Answer fork and wait requests until the worker closes the pipe; in a forked child, return its request."""
    for line in requests:
        request = json.loads(line)
        if request["op"] == "fork":
            pid = os.fork()
            if pid == 0:
                return request
            reply = {"pid": pid}
        else:  # "wait": the worker saw the kernel exit (pidfd); collect its status
            reply = {"status": os.waitpid(request["pid"], 0)[1]}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()
    return None


def become_kernel(request: dict, set_by_imports: dict[str, str]) -> None:
    """In the forked child: set up the process as launch_kernel and ipykernel_launcher would, then run."""
    os.setsid()  # launch_kernel's start_new_session: interrupts go to the kernel's process group
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.unfreeze()  # the kernel's collections see every object, as in a launched kernel
    sys.modules["numpy"].random.seed()  # numpy seeds its global generator from the OS at import; so here
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the server's pipes belong to the server; nbval sends the kernel's stderr to devnull
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], JPY_PARENT_PID=str(os.getppid()))  # its real parent is the server
    os.environ.update(set_by_imports)  # e.g. debugpy's PYDEVD_USE_FRAME_EVAL, as in any kernel
    sys.argv = [sys.modules["ipykernel_launcher"].__file__, *request["args"]]
    from ipykernel import kernelapp

    # parent_handle's default was read from the server's environment at import: give it the parent, so that
    # the kernel's poller ends it when the server (which ends with its pytest worker) is gone
    kernelapp.IPKernelApp.launch_instance(parent_handle=os.getppid())


def main() -> None:
    """Import PRELOAD, say so, then serve; a forked child runs its kernel and exits as a kernel does."""
    import importlib

    if sys.path and Path(sys.path[0]) == Path(__file__).parent:  # as ipykernel_launcher drops its start dir
        del sys.path[0]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in pytest's terminal is for pytest, not for us
    before = dict(os.environ)
    # matplotlib reads MPLBACKEND when imported; the kernel sets it (where unset or empty) before any cell runs
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for name in PRELOAD:
        importlib.import_module(name)
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    if threading.active_count() != 1:  # a fork copies only the thread that calls it
        raise RuntimeError(f"a preloaded module started a thread: {threading.enumerate()}")
    gc.collect()
    gc.freeze()  # the children's collections then skip (and so never copy) the server's pages
    sys.stdout.buffer.write(b'{"ready": true}\n')
    sys.stdout.buffer.flush()
    request = serve(sys.stdin.buffer, sys.stdout.buffer)
    if request is not None:
        become_kernel(request, set_by_imports)


# --- the worker's side ---------------------------------------------------------------------------------


class ForkServer:
    """A running server for one environment, and the pipe to it."""

    def __init__(self, env: dict[str, str], cwd: str):
        self.stderr = tempfile.TemporaryFile()  # as a kernel's stderr, not shown (debugpy warns at import)
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, env=env, cwd=cwd)
        self.lock = threading.Lock()
        self.call(None)

    def call(self, request: dict | None) -> dict:
        """Send one request (None: read the greeting) and return the reply."""
        with self.lock:
            try:
                if request is not None:
                    self.process.stdin.write(json.dumps(request).encode() + b"\n")
                    self.process.stdin.flush()
                line = self.process.stdout.readline()
            except BrokenPipeError:
                line = b""
            except BaseException:  # e.g. Ctrl-C between request and reply: the next reply would be this one's
                self.process.kill()
                raise
        if not line:
            self.stderr.seek(0)
            raise RuntimeError(f"the kernel fork server exited (code {self.process.wait()}); its stderr:\n"
                               f"{self.stderr.read().decode(errors='replace')[-3000:]}\n"
                               "BNBACKPROP_FORK_KERNELS=0 starts kernels the usual way")
        return json.loads(line)

    def close(self) -> None:
        """End the server: it exits when its input closes."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:  # it had already died, with a request unsent
            pass
        self.process.wait()
        self.stderr.close()


class ForkedKernel:
    """The Popen interface that jupyter_client's LocalProvisioner uses, for a kernel the server forked."""

    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None
        self.pidfd = os.pidfd_open(pid)  # before anyone reaps it: the server waits only when asked
        self.lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the kernel exits (TimeoutExpired after `timeout` seconds), then its exit code."""
        with self.lock:
            if self.returncode is None:
                exited = select.poll()
                exited.register(self.pidfd, select.POLLIN)
                if not exited.poll(None if timeout is None else timeout * 1000):
                    raise subprocess.TimeoutExpired(LAUNCHER, timeout)
                try:
                    status = os.waitstatus_to_exitcode(self.server.call({"op": "wait", "pid": self.pid})["status"])
                except RuntimeError:  # the server died first: init reaped the kernel, and its status is lost
                    status = LOST_STATUS
                self.returncode = status
                os.close(self.pidfd)
        return self.returncode

    def poll(self) -> int | None:
        """The exit code if the kernel has exited, else None."""
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, signum: int) -> None:
        """Signal the kernel unless it has exited (as Popen does)."""
        if self.poll() is None:
            signal.pidfd_send_signal(self.pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


_servers: dict[tuple, ForkServer] = {}


def fork_kernel(cmd: list[str], env: dict[str, str], cwd) -> ForkedKernel:
    """A kernel for `cmd` (python -m ipykernel_launcher ...), forked from the server for `env`."""
    cwd = os.path.abspath(cwd or os.getcwd())
    if not os.path.isdir(cwd):  # as Popen would; the child could only exit unseen
        raise FileNotFoundError(f"the kernel's working directory does not exist: {cwd}")
    server_env = {k: v for k, v in env.items() if k not in PER_KERNEL}
    key = (cwd, frozenset(server_env.items()))  # the cwd too: matplotlib reads ./matplotlibrc at import
    if key not in _servers or _servers[key].process.poll() is not None:
        _servers[key] = ForkServer(server_env, cwd)
    pid = _servers[key].call({"op": "fork", "args": cmd[len(LAUNCHER) + 1:], "env": env, "cwd": cwd})["pid"]
    return ForkedKernel(_servers[key], pid)


def close_servers() -> None:
    """End every server of this process (at the end of the session)."""
    while _servers:
        _servers.popitem()[1].close()


class ForkingKernelManager(KernelManager):
    """jupyter_client's KernelManager, launching ipykernel kernels by fork (the subclass hook it documents)."""

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        if kernel_cmd[:len(LAUNCHER) + 1] != [sys.executable, *LAUNCHER]:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        provisioner = self.provisioner
        provisioner.process = fork_kernel(kernel_cmd, kw["env"], kw.get("cwd"))
        provisioner.pid = provisioner.pgid = provisioner.process.pid  # setsid: its own process group
        provisioner.cwd = kw.get("cwd")
        self._reconcile_connection_info(provisioner.connection_info)


if __name__ == "__main__":
    main()
