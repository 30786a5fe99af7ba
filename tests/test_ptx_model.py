"""tests/ptx_model.h is what the tensor-core emulator and the CPU runtime take ldmatrix and mma.sync
to compute (their reading of the PTX ISA). tests/ptx_model_check.cpp checks it against the
fragment layouts NVIDIA's CuTe library declares for the same instructions (bf16 and fp16
m16n8k16, tf32 m16n8k8, ldmatrix .x4 with and without .trans), so that the kernels, the emulator
and that model all agree with a description the hardware is known to follow. No GPU needed."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ptx_model_matches_cute_fragment_layouts(tmp_path):
    source = os.path.join(ROOT, "tests", "ptx_model_check.cpp")
    if not os.path.exists(source):
        pytest.skip("sources not available (installed package)")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = str(tmp_path / "ptx_model_check")
    build = subprocess.run([compiler, "-std=c++17", "-O2", source, "-o", binary], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([binary], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ALL OK" in run.stdout, (run.stdout + run.stderr)[-4000:]
