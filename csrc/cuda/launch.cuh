// Launches a kernel of the direct and depthwise families on the current stream and checks the
// launch: the one place their host code touches the CUDA runtime. With SKELETON_SIMT_EMULATOR
// defined, the includer provides launch() instead (tests/simt/simt_runtime.h runs the same kernel
// files on a CPU, one fiber per CUDA thread), which is how they are tested without a GPU.
#pragma once

#if !defined(SKELETON_SIMT_EMULATOR)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

namespace skeleton_cuda {
namespace gpu {

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace gpu
}  // namespace skeleton_cuda
#endif
