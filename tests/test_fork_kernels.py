"""Kernels forked from a preloaded server (tests/fork_kernels.py) behave as kernels launched the usual way."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
from jupyter_client.manager import KernelManager
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

from notebook_checks import second_env

from tests import fork_kernels  # as conftest.py imports it: one module, one set of servers

pytestmark = pytest.mark.skipif(not fork_kernels.enabled(), reason="kernels start by fork only on Linux 5.3+")

BOOK = Path(__file__).parents[1] / "book"
MARK = ("BNBACKPROP_FORK_TEST", uuid.uuid4().hex)
# What a kernel reports about itself: everything that differs between processes set up differently.
REPORT = """
import gc, json, os, signal, sys, threading
import comm, ipywidgets, matplotlib
import numpy as np
from threadpoolctl import threadpool_info
from numpy._core._multiarray_umath import __cpu_features__
print(json.dumps({
    "cwd": os.getcwd(), "sys.path": sys.path, "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:-1],
    "env": {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "PYTEST_CURRENT_TEST")},
    "watches its parent": os.environ["JPY_PARENT_PID"] == str(os.getppid()),
    "own session": os.getsid(0) == os.getpid() == os.getpgid(0),
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE)],
    "stderr": os.path.realpath("/proc/self/fd/2"),
    "numpy's SIMD": sorted(k for k, v in __cpu_features__.items() if v),
    "BLAS": [(p["user_api"], p["num_threads"]) for p in threadpool_info()],
    "backend": matplotlib.get_backend(), "__main__": sys.modules["__main__"].__name__,
    "parent poller": [type(t).__name__ for t in threading.enumerate() if "Poller" in type(t).__name__],
    "widget comm targets": sorted(comm.get_comm_manager().targets),
    "gc objects": len(gc.get_objects()), "first draw": np.random.random(),
}))
"""


def start(manager: type[KernelManager], env: dict[str, str]):
    """A kernel for nbval's current-environment spec, in book/, with os.environ updated by `env`."""
    km = manager(kernel_name=CURRENT_ENV_KERNEL_NAME, kernel_spec_manager=NbvalKernelspecManager())
    with mock.patch.dict(os.environ, env):
        km.start_kernel(cwd=str(BOOK), stderr=open(os.devnull, "w"))  # as nbval starts them
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def run(kc, code: str, timeout: float = 60) -> tuple[dict, list[dict]]:
    """Execute `code`; its reply's content and its output messages."""
    outputs = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    return reply["content"], [o for o in outputs if o["msg_type"] in ("stream", "display_data", "error")]


def report(kc) -> dict:
    """REPORT's answer, and how many PNG figures `plt.plot(...); plt.show()` displays."""
    _, outputs = run(kc, REPORT)
    answer = json.loads("".join(o["content"]["text"] for o in outputs if o["msg_type"] == "stream"))
    _, outputs = run(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    answer["figures"] = sum("image/png" in o["content"].get("data", {}) for o in outputs)
    return answer


def stop(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def end_server(mark: tuple[str, str]) -> fork_kernels.ForkServer:
    """Remove the one server whose environment holds `mark` and end it (it must still be running)."""
    keys = [key for key in fork_kernels._servers if mark in key[1]]
    server = fork_kernels._servers.pop(keys[0])
    try:
        assert len(keys) == 1  # one server for every kernel of one environment
        assert server.process.poll() is None
    finally:
        server.close()
    return server


@pytest.fixture(scope="module")
def env():
    """The second numeric environment (read at import time by numpy and BLAS: the server must have it too),
    plus a variable no other server has: these tests get a server of their own, and end it."""
    yield second_env() | dict([MARK])
    assert end_server(MARK).process.returncode == 0


def test_a_forked_kernel_is_set_up_as_a_launched_one(env):
    reports = []
    for manager in (KernelManager, fork_kernels.ForkingKernelManager, fork_kernels.ForkingKernelManager):
        km, kc = start(manager, env)
        try:
            reports.append(report(kc))
        finally:
            stop(km, kc)
    draws = {r.pop("first draw") for r in reports}
    assert len(draws) == 3  # numpy's global generator seeded anew in each kernel, forked or not
    objects = [r.pop("gc objects") for r in reports]
    assert min(objects[1:]) > 0.9 * objects[0]  # the garbage collector sees the preloaded modules' objects
    launched, forked, _ = reports
    assert forked == launched
    assert forked["figures"] == 1 and forked["own session"] and forked["watches its parent"]
    assert forked["parent poller"] == ["ParentPollerUnix"]
    assert forked["widget comm targets"] == ["jupyter.widget", "jupyter.widget.control"]
    assert forked["env"]["NPY_DISABLE_CPU_FEATURES"] == env["NPY_DISABLE_CPU_FEATURES"]
    assert not set(env["NPY_DISABLE_CPU_FEATURES"].split()) & set(forked["numpy's SIMD"])


def test_a_forked_kernel_is_interrupted_waits_for_its_children_and_reports_its_exit_code(env):
    km, kc = start(fork_kernels.ForkingKernelManager, env)
    try:
        kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
        while kc.get_iopub_msg(timeout=10)["msg_type"] != "stream":  # the cell's own code is running
            pass
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=20)["content"]
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        content, outputs = run(kc, "import subprocess\nprint(subprocess.run(['sh', '-c', 'exit 5']).returncode)")
        assert content["status"] == "ok" and outputs[-1]["content"]["text"] == "5\n"
        kc.execute("import os\nos._exit(7)")
        assert km.provisioner.process.wait(timeout=20) == 7
        assert not km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_forked_kernel_ends_when_its_server_is_killed():
    # The server ends with its pytest worker (its input closes); a kernel left by a crash ends with the server.
    mark = ("BNBACKPROP_FORK_TEST", uuid.uuid4().hex)
    km, kc = start(fork_kernels.ForkingKernelManager, dict([mark]))
    kernel = km.provisioner.process
    try:
        server = next(fork_kernels._servers[key] for key in fork_kernels._servers if mark in key[1])
        server.process.send_signal(signal.SIGKILL)
        start_wait = time.monotonic()
        while kernel.poll() is None and time.monotonic() - start_wait < 20:
            time.sleep(0.1)
        assert kernel.returncode == fork_kernels.LOST_STATUS  # the poller checks its parent every second
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        for key in [key for key in fork_kernels._servers if mark in key[1]]:
            fork_kernels._servers.pop(key).close()


def test_a_missing_working_directory_is_refused_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="working directory does not exist"):
        fork_kernels.fork_kernel([os.sys.executable, *fork_kernels.LAUNCHER, "-f", "k.json"], {}, tmp_path / "gone")


def test_the_switch_turns_forking_off():
    with mock.patch.dict(os.environ, BNBACKPROP_FORK_KERNELS="0"):
        assert not fork_kernels.enabled()
    assert fork_kernels.enabled()
