"""Hostile inputs to the grader: forged result messages, wrong argument types, module exports."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest

from bnbackprop.batchnorm import backward
from bnbackprop.grader import diagnose
from bnbackprop.grader.report import EXIT_CODES


def _forge(info):
    """A backward that writes its own result message on the grader's pipe and leaves: a forged result."""

    def forger(dout, cache):
        import json
        import os
        import struct
        import sys

        frame = sys._getframe()
        while frame.f_code.co_name != "_child":
            frame = frame.f_back
        head = json.dumps({"info": info, "arrays": []}).encode()
        os.write(frame.f_locals["wfd"], struct.pack("<Q", len(head)) + head)
        os._exit(0)

    return forger


@pytest.mark.parametrize("info", [{"status": "ok"}, ["not", "a", "dict"], {"status": "crashed"}, {"status": "timeout"}])
def test_a_forged_result_message_is_a_finding_not_a_grader_crash(info):
    report = diagnose(_forge(info), convention="cs231n", timeout=10)
    assert report.verdict in ("could not run", "exited"), report
    assert report.exit_code in (3, 5)
    assert not report.passed


@pytest.mark.parametrize("module", ["bnbackprop.grader", "bnbackprop.grader.__main__", "bnbackprop.grader.runner",
                                    "bnbackprop.grader.judge", "bnbackprop.grader.report", "bnbackprop.grader.cases",
                                    "bnbackprop.grader.bugs", "bnbackprop.grader.battery"])
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("ddof", [1.0, 0.0, "1", 1.5])
def test_a_ddof_that_is_not_an_integer_is_refused(ddof):
    with pytest.raises((TypeError, ValueError), match="ddof must be"):
        diagnose(backward, ddof=ddof)


def test_a_numpy_integer_ddof_is_accepted_and_reported_as_an_int():
    report = diagnose(backward, ddof=np.int64(0))
    assert report.verdict == "correct" and type(report.to_dict()["ddof"]) is int
    assert EXIT_CODES[report.verdict] == 0


def test_a_process_the_readers_code_leaves_behind_neither_turns_a_pass_into_a_timeout_nor_outlives_the_grade(tmp_path):
    marker = tmp_path / "still-running"

    def leaves_a_sleeper(dout, cache):
        import os
        import time

        if os.fork() == 0:  # inherits the grader's result pipe and holds it open
            time.sleep(2)
            open(marker, "w").close()
            os._exit(0)
        return backward(dout, cache)

    report = diagnose(leaves_a_sleeper, convention="cs231n", timeout=1)
    assert report.verdict == "correct", report
    time.sleep(2.5)
    assert not marker.exists(), "a process started by the reader's code outlived the grader's call"
