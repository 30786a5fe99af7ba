"""tests/gpu_runbook.sh runs only on a GPU machine, whose time is scarce: a typo there would cost a
device call. Here, without a GPU: the script parses, and every pytest selection it makes
(`<test file> ... -k "<expression>"`) still names at least one test."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNBOOK = os.path.join(ROOT, "tests", "gpu_runbook.sh")


def selections():
    """(test file, -k expression) of every selection in the runbook, continuation lines joined."""
    with open(RUNBOOK) as f:
        text = f.read().replace("\\\n", " ")
    found = re.findall(r"(tests/test_\w+\.py)[^\n]*?-k \"([^\"]+)\"", text)
    assert found, "no pytest selection found in the runbook"
    return found


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_runbook_parses():
    subprocess.run(["bash", "-n", RUNBOOK], check=True)


@pytest.mark.parametrize("test_file, expression", selections())
def test_runbook_selections_name_tests(test_file, expression):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", test_file, "-k", expression],
        cwd=ROOT, capture_output=True, text=True,
    )
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected, f"'-k {expression}' selects nothing in {test_file}:\n{result.stdout}\n{result.stderr}"


def run_runbook(tmp_path, *args):
    return subprocess.run(
        ["bash", RUNBOOK, *args], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OUT": str(tmp_path)},
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_runbook_refuses_unknown_stages_before_running_any(tmp_path):
    result = run_runbook(tmp_path, "build", "tensor-cores", "benchh")
    assert result.returncode == 2 and "unknown stage 'benchh'" in result.stderr
    assert not (tmp_path / "summary.txt").exists() and not (tmp_path / "build.log").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_runbook_budget_skips_what_no_longer_fits(tmp_path):
    # 15 s of budget leave less than a stage's minimum once the summary's 10 s are kept back: the
    # build must be skipped, not started (on a device it would run past the call's end).
    result = run_runbook(tmp_path, "--budget", "15", "first-contact")
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for stage in ("build", "tensor-cores", "cuda-cores", "bench-quick"):
        assert f"{stage}: skipped (budget spent)" in summary
    assert not (tmp_path / "build.log").exists()


def test_runbook_benchmark_options_exist():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_suite

    with open(RUNBOOK) as f:
        precisions = re.findall(r"--precision (\S+)", f.read())
    assert precisions and set(precisions) <= set(gpu_suite.PRECISIONS)
