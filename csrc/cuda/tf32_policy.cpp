// Whether float32 layers may run on the TF32 tensor cores: the flag that nn.Conv2d's cuDNN path
// obeys (torch.backends.cudnn.allow_tf32, or torch.backends.cudnn.conv.fp32_precision in newer
// PyTorch), read at every call as cuDNN does. Host C++ compiled by the C++ compiler, not nvcc, to
// keep ATen/Context.h out of the .cu files.
//
// PyTorch has asked this in three ways over its versions; setup.py reads the installed
// ATen/Context.h and sets SKELETON_TF32_QUERY to the one it declares:
//   2: allowTF32CuDNN(std::optional<at::Float32Op>)   per operator (conv), enum
//   1: allowTF32CuDNN(const std::string& op)           per operator (conv), string
//   0: allowTF32CuDNN()                                one flag for all of cuDNN
#include <ATen/Context.h>

#include "tf32_policy.h"

#ifndef SKELETON_TF32_QUERY
#define SKELETON_TF32_QUERY 0
#endif

namespace skeleton_cuda {
namespace gpu {

bool conv_allows_tf32() {
#if SKELETON_TF32_QUERY == 2
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#elif SKELETON_TF32_QUERY == 1
  return at::globalContext().allowTF32CuDNN("conv");
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

}  // namespace gpu
}  // namespace skeleton_cuda
