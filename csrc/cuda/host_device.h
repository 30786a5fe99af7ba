// Function qualifiers for code shared by CUDA kernels, their host launchers and the CPU test
// runtimes (tests/simt, tests/tensor_core_emulator.cpp), which compile it as plain C++ without
// CUDA or ATen headers.
#pragma once

#if defined(__CUDACC__)
#define SKC_DEVICE __device__ __forceinline__
#define SKC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SKC_DEVICE inline
#define SKC_HOST_DEVICE inline
#endif
