// Whether float32 layers may run on the TF32 tensor cores (tf32_policy.cpp).
#pragma once

namespace skeleton_cuda {
namespace gpu {

// The flag nn.Conv2d obeys on CUDA (torch.backends.cudnn.allow_tf32 /
// torch.backends.cudnn.conv.fp32_precision), read now.
bool conv_allows_tf32();

}  // namespace gpu
}  // namespace skeleton_cuda
