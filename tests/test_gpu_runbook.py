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
