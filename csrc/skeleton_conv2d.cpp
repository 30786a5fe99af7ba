// Op schemas, the autocast kernels and the (empty) Python module whose import registers them.
//
// The op is a forward and a backward op; autograd, fake kernels and torch.compile support are
// registered from Python (skeleton_cuda/ops.py). Backend kernels register themselves at the bottom
// of cpu/skeleton_conv2d_cpu.cpp and cuda/skeleton_conv2d_cuda.cu.
#include <ATen/autocast_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <string>

extern "C" {
// `import skeleton_cuda._C` loads this library, which runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Compiled kernels of skeleton_cuda; the ops live in torch.ops.skeleton_cuda.",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

namespace skeleton_cuda {

// Defined with the CPU kernels (cpu/skeleton_conv2d_cpu.cpp).
std::string cpu_kernel_isa();

namespace {

// Under autocast the op runs in the autocast dtype, as nn.Conv2d does (a "lower precision fp" op).
template <c10::DeviceType device>
at::Tensor skeleton_conv2d_autocast(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    c10::IntArrayRef stride,
    c10::IntArrayRef padding,
    c10::IntArrayRef dilation,
    int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      device == c10::DeviceType::CUDA ? c10::DispatchKey::AutocastCUDA
                                      : c10::DispatchKey::AutocastCPU);
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("skeleton_cuda::skeleton_conv2d", "")
                       .typed<decltype(skeleton_conv2d_autocast<device>)>();
  return op.call(
      at::autocast::cached_cast(dtype, input, device),
      at::autocast::cached_cast(dtype, weight, device),
      at::autocast::cached_cast(dtype, bias, device),
      stride,
      padding,
      dilation,
      groups);
}

}  // namespace

TORCH_LIBRARY(skeleton_cuda, m) {
  m.def(
      "skeleton_conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // output_mask selects (grad_input, grad_weight, grad_bias); a masked-out gradient comes back as
  // an empty tensor of shape (0,).
  m.def(
      "skeleton_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, "
      "Tensor)");
  // Which CPU kernel family float32 runs on this machine ("avx512", "avx2" or "generic"); the
  // environment variable SKELETON_CUDA_CPU_ISA can lower it, for tests and comparisons.
  m.def("cpu_kernel_isa() -> str", &cpu_kernel_isa);
}

TORCH_LIBRARY_IMPL(skeleton_cuda, AutocastCPU, m) {
  m.impl("skeleton_conv2d", skeleton_conv2d_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(skeleton_cuda, AutocastCUDA, m) {
  m.impl("skeleton_conv2d", skeleton_conv2d_autocast<c10::DeviceType::CUDA>);
}

}  // namespace skeleton_cuda
