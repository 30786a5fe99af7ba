"""Builds skeleton_cuda's compiled ops against the PyTorch already installed.

    pip install --no-build-isolation .

CUDA kernels are built when PyTorch has CUDA and a CUDA toolkit is found (CUDA_HOME), or when
FORCE_CUDA=1; TORCH_CUDA_ARCH_LIST picks the GPU architectures (needed where no GPU is visible).
FORCE_CUDA=0 builds the CPU kernels only.
"""

import glob
import os
import re
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "skeleton_cuda is built against an installed PyTorch, and none was found.\n"
        "Install PyTorch first (https://pytorch.org/get-started/locally/), then build with\n"
        "    pip install --no-build-isolation .\n"
        "(--no-build-isolation lets the build see the PyTorch you installed.)"
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force is not None and force not in ("0", "1"):
        sys.exit(f"FORCE_CUDA must be 0 or 1, got {force!r}")
    if force == "0":
        return False
    has_toolkit = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if force == "1" and not has_toolkit:
        sys.exit(
            "FORCE_CUDA=1 but no CUDA build is possible: "
            f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}. "
            "Install a CUDA build of PyTorch and set CUDA_HOME to the CUDA toolkit's root."
        )
    return has_toolkit


def tf32_query_form():
    """How this PyTorch's at::Context::allowTF32CuDNN asks about TF32 (csrc/cuda/tf32_policy.cpp):
    2 per operator by enum, 1 per operator by string, 0 one flag for all of cuDNN."""
    for root in cpp_extension.include_paths():
        path = os.path.join(root, "ATen", "Context.h")
        if os.path.exists(path):
            with open(path) as f:
                declaration = re.search(r"bool\s+allowTF32CuDNN\(([^)]*)\)", f.read())
            if declaration:
                argument = declaration.group(1)
                return 2 if "Float32Op" in argument else 1 if "string" in argument else 0
    return 0


def sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", pattern)))


def extension():
    cxx_flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]
    link_flags = ["-fopenmp"]
    cpp_sources = sources("*.cpp") + sources("cpu/*.cpp")
    if want_cuda():
        cuda_sources = sources("cuda/*.cu") + sources("cuda/*.cpp")
        cuda_defines = ["-DSKELETON_WITH_CUDA", f"-DSKELETON_TF32_QUERY={tf32_query_form()}"]
        nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        print(f"skeleton_cuda: building CPU and CUDA kernels ({len(cuda_sources)} .cu files)")
        return cpp_extension.CUDAExtension(
            "skeleton_cuda._C",
            cpp_sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags + cuda_defines, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
        )
    print("skeleton_cuda: building CPU kernels only (no CUDA toolkit or CPU-only PyTorch)")
    return cpp_extension.CppExtension(
        "skeleton_cuda._C",
        cpp_sources,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )


setup(
    name="skeleton_cuda",
    version="0.1.0",
    description="Skeleton convolution (the five cross taps of a 3x3 kernel) for PyTorch, CPU and CUDA",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["skeleton_cuda", "skeleton_cuda.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    zip_safe=False,
)
