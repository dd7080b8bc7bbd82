"""Issue 12's CLI: the convention read off the signature, CS231n's forward found, arguments checked, the JSON schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bnbackprop.grader import diagnose
from bnbackprop.grader.__main__ import main as cli_main
from bnbackprop.grader.report import EXIT_CODES, JSON_FIELDS, SCHEMA, STATUSES
from helpers import CS231N_SAMPLE, run_cli


# A tool that fits how people grade

CS231N_FILE = CS231N_SAMPLE + '''
def plain_backward(x, gamma, beta, dy, eps):
    xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    g = gamma * dy
    dx = (g - g.mean(0) - xhat * (g * xhat).mean(0)) / np.sqrt(x.var(0) + eps)
    return dx, (dy * xhat).sum(0), dy.sum(0)
'''


def test_cs231n_forward_is_found_and_plain_is_read_off_the_signature(tmp_path):
    found = run_cli(tmp_path, CS231N_FILE, "batchnorm_backward")
    assert found.returncode == 0 and "found batchnorm_forward" in found.stdout, found.stdout + found.stderr
    plain = run_cli(tmp_path, CS231N_FILE, "plain_backward")
    assert plain.returncode == 0 and "convention 'plain'" in plain.stdout and "read off the signature" in plain.stdout


def test_a_custom_cache_without_its_forward_says_what_to_try():
    def tuple_cache(dout, cache):
        xhat, gamma, std = cache
        return dout, dout, dout

    report = diagnose(tuple_cache)
    assert report.verdict == "could not run" and "pass it: forward_fn=your_forward (--forward NAME)" in report.problem


@pytest.mark.parametrize("value", ["inf", "1e12", "nan", "0", "-1", "soon"])
def test_bad_timeouts_are_usage_errors(tmp_path, capsys, value):
    path = tmp_path / "student.py"
    path.write_text(textwrap.dedent(CS231N_FILE))
    with pytest.raises(SystemExit) as stop:
        cli_main([f"{path}:batchnorm_backward", "--timeout", value])
    assert stop.value.code == 2 and "number of seconds" in capsys.readouterr().err


def test_json_report_follows_the_documented_schema(tmp_path):
    proc = run_cli(tmp_path, CS231N_FILE.replace("g.mean(axis=0) - ", ""), "batchnorm_backward", "--json")
    report = json.loads(proc.stdout)
    assert list(report) == list(JSON_FIELDS) and report["schema"] == SCHEMA
    assert report["verdict"] in EXIT_CODES and report["exit_code"] == proc.returncode == 1
    assert isinstance(report["passed"], bool) and report["convention"] == "cs231n" and report["ddof"] == 0
    for case in report["cases"]:
        assert set(case) == {"name", "shape", "eps", "status", "errors", "message"} and case["status"] in STATUSES
        assert set(case["errors"]) == {"dx", "dgamma", "dbeta"}
        assert all(v is None or isinstance(v, float) for v in case["errors"].values())
    assert set(report["versions"]) == {"bnbackprop", "numpy", "python"}
    assert [m["name"] for m in report["mistakes"]] == ["missing_inv_n"] or report["verdict"] == "not recognised"


def test_readme_documents_every_json_field():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in JSON_FIELDS) and SCHEMA in readme


