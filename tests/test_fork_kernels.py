"""Kernels forked from a preloaded server (tests/fork_kernels.py) behave as kernels launched the usual way."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from unittest import mock

import pytest
from jupyter_client.manager import KernelManager
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

import fork_kernels
from notebook_checks import second_env

pytestmark = pytest.mark.skipif(not fork_kernels.enabled(), reason="kernels start by fork only on Linux 5.3+")

BOOK = Path(__file__).parents[1] / "book"
MARK = ("BNBACKPROP_FORK_TEST", uuid.uuid4().hex)
# What a kernel reports about itself: everything that differs between processes set up differently.
REPORT = """
import json, os, signal, sys
import matplotlib
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


@pytest.fixture(scope="module")
def env():
    """The second numeric environment (read at import time by numpy and BLAS: the server must have it too),
    plus a variable no other server has: these tests get a server of their own, and end it."""
    yield second_env() | dict([MARK])
    keys = [key for key in fork_kernels._servers if MARK in key]
    assert len(keys) == 1  # one server for every kernel of one environment
    server = fork_kernels._servers.pop(keys[0])
    assert server.process.poll() is None
    server.close()
    assert server.process.returncode == 0


def test_a_forked_kernel_is_set_up_as_a_launched_one(env):
    reports = []
    for manager in (KernelManager, fork_kernels.ForkingKernelManager):
        km, kc = start(manager, env)
        reports.append(report(kc))
        stop(km, kc)
    launched, forked = reports
    assert forked == launched
    assert forked["figures"] == 1 and forked["own session"] and forked["watches its parent"]
    assert forked["env"]["NPY_DISABLE_CPU_FEATURES"] == env["NPY_DISABLE_CPU_FEATURES"]
    assert not set(env["NPY_DISABLE_CPU_FEATURES"].split()) & set(forked["numpy's SIMD"])


def test_a_forked_kernel_is_interrupted_waits_for_its_children_and_reports_its_exit_code(env):
    km, kc = start(fork_kernels.ForkingKernelManager, env)
    kc.execute("import time\ntime.sleep(60)")
    kc.get_iopub_msg(timeout=10)  # busy: the cell has started
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=20)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    content, outputs = run(kc, "import subprocess\nprint(subprocess.run(['sh', '-c', 'exit 5']).returncode)")
    assert content["status"] == "ok" and outputs[-1]["content"]["text"] == "5\n"
    kc.execute("import os\nos._exit(7)")
    assert km.provisioner.process.wait(timeout=20) == 7
    assert not km.is_alive()
    kc.stop_channels()
    km.cleanup_resources()


def test_the_switch_turns_forking_off():
    with mock.patch.dict(os.environ, BNBACKPROP_FORK_KERNELS="0"):
        assert not fork_kernels.enabled()
    assert fork_kernels.enabled()
