// CUDA kernels of guided_relu. Packed path (the usual one: numel a multiple of the packet,
// 16-byte aligned data): each thread moves one 16-byte packet of kPacket elements with one
// load and one store. Forward: a packet's bits are OR-ed across the lanes that share a
// mask word (warp shuffles) and one lane writes the word. Backward: a thread reads its
// packet's word once and applies it to every stacked copy of the gradient. Other sizes
// and alignments: the same math one element per thread, words gathered with a ballot.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "guided_relu.h"
#include "launch.cuh"

namespace pyfastviz {
namespace {

// kPacket elements of one 16-byte access.
template <typename scalar_t, int kPacket>
struct alignas(16) Packet {
  scalar_t v[kPacket];
};

template <typename scalar_t>
constexpr int packet_size() {
  return 16 / static_cast<int>(sizeof(scalar_t));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename scalar_t, typename acc_t, int kPacket>
__global__ void guided_relu_forward_packed_kernel(const scalar_t* x, scalar_t* out,  // x == out in place
                                                  uint32_t* __restrict__ words, int64_t packets, acc_t top,
                                                  bool has_upper) {
  using P = Packet<scalar_t, kPacket>;
  constexpr int kLanesPerWord = kMaskWordBits / kPacket;
  const scalar_t zero = static_cast<scalar_t>(0), top_as_input = static_cast<scalar_t>(top);
  const int lane = threadIdx.x & (kMaskWordBits - 1);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  // `base` is the warp's first packet: warp-uniform, so every lane reaches the shuffles.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x - lane); base < packets;
       base += stride) {
    const int64_t p = base + lane;
    const int64_t first = p * kPacket;  // element index of the packet's first element
    uint32_t bits = 0;
    if (p < packets) {
      const P in = reinterpret_cast<const P*>(x)[p];
      P result;
#pragma unroll
      for (int j = 0; j < kPacket; ++j) {
        const acc_t v = static_cast<acc_t>(in.v[j]);
        result.v[j] = clamped_relu(in.v[j], v, zero, top_as_input, top, has_upper);
        bits |= mask_bit_if(relu_passes_gradient(v, top, has_upper), mask_bit(first + j));
      }
      reinterpret_cast<P*>(out)[p] = result;
    }
    // The kLanesPerWord lanes of one word are aligned neighbours (base is a multiple of 32).
#pragma unroll
    for (int offset = 1; offset < kLanesPerWord; offset <<= 1) {
      bits |= __shfl_xor_sync(0xffffffffu, bits, offset);
    }
    if (p < packets && (first & (kMaskWordBits - 1)) == 0) words[mask_word_index(first)] = bits;
  }
}

template <typename scalar_t, int kPacket>
__global__ void guided_relu_backward_packed_kernel(const scalar_t* __restrict__ grad, scalar_t* __restrict__ dx,
                                                   const uint32_t* __restrict__ words, int64_t packets,
                                                   int64_t copies) {
  using P = Packet<scalar_t, kPacket>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packets; p += stride) {
    const int64_t first = p * kPacket;
    const uint32_t word = words[mask_word_index(first)];
    for (int64_t k = 0; k < copies; ++k) {
      const P in = reinterpret_cast<const P*>(grad)[k * packets + p];
      P result;
#pragma unroll
      for (int j = 0; j < kPacket; ++j) {
        result.v[j] = guided_gradient(in.v[j], mask_passes(word, mask_bit(first + j)));
      }
      reinterpret_cast<P*>(dx)[k * packets + p] = result;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void guided_relu_forward_kernel(const scalar_t* x, scalar_t* out,  // x == out in place
                                           uint32_t* __restrict__ words, int64_t n, acc_t top,
                                           bool has_upper) {
  const int lane = threadIdx.x & (kMaskWordBits - 1);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const scalar_t zero = static_cast<scalar_t>(0), top_as_input = static_cast<scalar_t>(top);
  // `base` is the warp's first element: warp-uniform, so every lane reaches the ballot.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x - lane); base < n;
       base += stride) {
    const int64_t i = base + lane;
    bool passes = false;
    if (i < n) {
      const scalar_t in = x[i];
      const acc_t v = static_cast<acc_t>(in);
      out[i] = clamped_relu(in, v, zero, top_as_input, top, has_upper);
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
    const bool passes = mask_passes(words[mask_word_index(i)], mask_bit(i));
    for (int64_t k = 0; k < copies; ++k) {
      dx[k * n + i] = guided_gradient(grad[k * n + i], passes);
    }
  }
}

// Runs the forward over x (read as laid out) into out (same layout; may be x) and mask.
void forward_cuda(const at::Tensor& x, const at::Tensor& out, const at::Tensor& mask, std::optional<double> upper) {
  const int64_t n = x.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "guided_relu_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kPacket = packet_size<scalar_t>();
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    uint32_t* words = reinterpret_cast<uint32_t*>(mask.mutable_data_ptr<int32_t>());
    const acc_t top = static_cast<acc_t>(upper.value_or(0.0));
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (n % kPacket == 0 && aligned16(x_data) && aligned16(out_data)) {
      guided_relu_forward_packed_kernel<scalar_t, acc_t, kPacket>
          <<<blocks_for(n / kPacket), kThreadsPerBlock, 0, stream>>>(x_data, out_data, words, n / kPacket, top,
                                                                      upper.has_value());
    } else {
      guided_relu_forward_kernel<scalar_t, acc_t>
          <<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(x_data, out_data, words, n, top, upper.has_value());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> guided_relu_cuda(const at::Tensor& input,
                                                    std::optional<double> upper) {
  check_floating(input, "x");
  check_upper(upper);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(guided_relu_layout(input));
  at::Tensor out = at::empty_like(x);
  at::Tensor mask = at::empty({mask_words(x.numel())}, x.options().dtype(at::kInt));
  forward_cuda(x, out, mask, upper);
  return {out, mask};
}

at::Tensor guided_relu_inplace_cuda(at::Tensor& x, std::optional<double> upper) {
  const c10::cuda::CUDAGuard guard(x.device());
  return guided_relu_in_place(x, upper, guided_relu_cuda, forward_cuda);
}

at::Tensor guided_relu_backward_cuda(const at::Tensor& grad_output, const at::Tensor& mask,
                                     bool channels_last, int64_t copies) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor grad = backward_input_in_mask_order(grad_output, mask, channels_last, copies);
  at::Tensor grad_input = at::empty_like(grad);
  const int64_t n = grad.numel() / copies;
  if (n == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "guided_relu_backward_cuda", [&] {
    constexpr int kPacket = packet_size<scalar_t>();
    const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
    scalar_t* dx_data = grad_input.mutable_data_ptr<scalar_t>();
    const uint32_t* words = reinterpret_cast<const uint32_t*>(mask.const_data_ptr<int32_t>());
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (n % kPacket == 0 && aligned16(grad_data) && aligned16(dx_data)) {
      guided_relu_backward_packed_kernel<scalar_t, kPacket>
          <<<blocks_for(n / kPacket), kThreadsPerBlock, 0, stream>>>(grad_data, dx_data, words, n / kPacket, copies);
    } else {
      guided_relu_backward_kernel<scalar_t>
          <<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(grad_data, dx_data, words, n, copies);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfastviz, CUDA, m) {
  m.impl("guided_relu", &guided_relu_cuda);
  m.impl("guided_relu_", &guided_relu_inplace_cuda);
  m.impl("guided_relu_backward", &guided_relu_backward_cuda);
}

}  // namespace pyfastviz
