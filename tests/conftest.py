import os

import pytest
import torch

import skeleton_cuda


def pytest_report_header(config):
    return (
        f"skeleton_cuda: compiled ops {skeleton_cuda.has_compiled_ops()}, CUDA kernels "
        f"{skeleton_cuda.has_cuda_kernels()}, CPU kernels {skeleton_cuda.cpu_kernel_isa()}, "
        f"torch {torch.__version__}, GPU {torch.cuda.is_available()}"
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def cpu_isa(monkeypatch):
    """Selects the CPU kernel family for one test via SKELETON_CUDA_CPU_ISA."""

    def select(isa):
        monkeypatch.setenv("SKELETON_CUDA_CPU_ISA", isa)
        assert skeleton_cuda.cpu_kernel_isa() == isa

    yield select
    os.environ.pop("SKELETON_CUDA_CPU_ISA", None)
