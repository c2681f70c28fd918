// CUDA kernels of guided_relu. Forward: one element per thread, the warp's 32 mask bits
// gathered with one ballot and written as one word. Backward: each thread reads its bit
// once and applies it to every stacked copy of the gradient.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "guided_relu.h"
#include "launch.cuh"

namespace pyfastviz {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void guided_relu_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                           uint32_t* __restrict__ words, int64_t n, acc_t top,
                                           bool has_upper) {
  const int lane = threadIdx.x & (kMaskWordBits - 1);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  // `base` is the warp's first element: warp-uniform, so every lane reaches the ballot.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x - lane); base < n;
       base += stride) {
    const int64_t i = base + lane;
    bool passes = false;
    if (i < n) {
      const acc_t v = static_cast<acc_t>(x[i]);
      out[i] = static_cast<scalar_t>(clamped_relu(v, top, has_upper));
      passes = relu_passes_gradient(v, top, has_upper);
    }
    const uint32_t bits = __ballot_sync(0xffffffffu, passes);
    if (lane == 0) words[mask_word_index(base)] = bits;
  }
}

template <typename scalar_t>
__global__ void guided_relu_backward_kernel(const scalar_t* __restrict__ grad, scalar_t* __restrict__ dx,
                                            const uint32_t* __restrict__ words, int64_t n,
                                            int64_t copies) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bool passes = mask_passes(words[mask_word_index(i)], i);
    for (int64_t k = 0; k < copies; ++k) {
      dx[k * n + i] = guided_gradient(grad[k * n + i], passes);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> guided_relu_cuda(const at::Tensor& input,
                                                    std::optional<double> upper) {
  check_floating(input, "x");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(guided_relu_layout(input));
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  at::Tensor mask = at::empty({mask_words(n)}, x.options().dtype(at::kInt));
  if (n == 0) return {out, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "guided_relu_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    guided_relu_forward_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
            x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
            reinterpret_cast<uint32_t*>(mask.mutable_data_ptr<int32_t>()), n,
            static_cast<acc_t>(upper.value_or(0.0)), upper.has_value());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mask};
}

at::Tensor guided_relu_backward_cuda(const at::Tensor& grad_output, const at::Tensor& mask,
                                     bool channels_last, int64_t copies) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor grad = backward_input_in_mask_order(grad_output, mask, channels_last, copies);
  at::Tensor grad_input = at::empty_like(grad);
  const int64_t n = grad.numel() / copies;
  if (n == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "guided_relu_backward_cuda", [&] {
    guided_relu_backward_kernel<scalar_t><<<blocks_for(n), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(),
        reinterpret_cast<const uint32_t*>(mask.const_data_ptr<int32_t>()), n, copies);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfastviz, CUDA, m) {
  m.impl("guided_relu", &guided_relu_cuda);
  m.impl("guided_relu_backward", &guided_relu_backward_cuda);
}

}  // namespace pyfastviz
