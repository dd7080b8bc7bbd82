"""Helpers shared by the test modules (import them with `from helpers import ...`; conftest.py is for pytest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: _config.yml, _toc.yml, book/, tools/

# A reader's file in CS231n's style: the forward, a right backward, and one that drops gamma.
CS231N_SAMPLE = '''
import numpy as np

def batchnorm_forward(x, gamma, beta, bn_param):
    mu, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + bn_param["eps"])
    return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + bn_param["eps"]))

def batchnorm_backward(dout, cache):
    xhat, gamma, std = cache
    g = dout * gamma
    dx = (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) / std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)

def batchnorm_backward_nogamma(dout, cache):
    xhat, gamma, std = cache
    dx = (dout - dout.mean(axis=0) - xhat * (dout * xhat).mean(axis=0)) / std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)
'''


def run_cli(tmp_path, source, target, *args, timeout=120):
    """Write source to a file and run the grader's CLI on it in a fresh interpreter."""
    path = tmp_path / "student.py"
    path.write_text(textwrap.dedent(source))
    cmd = [sys.executable, "-m", "bnbackprop.grader", f"{path}:{target}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
