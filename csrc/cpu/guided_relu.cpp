// CPU kernels of guided_relu: one 32-element mask word per inner step, words in parallel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "guided_relu.h"

namespace pyfastviz {
namespace {

constexpr int64_t kWordGrain = at::internal::GRAIN_SIZE / kMaskWordBits;

// One mask word: `count` (<= 32) elements, without branches on the data. Full words pass
// kFullWord, a compile-time trip count, which is what lets the compiler vectorise the loop.
using FullWord = std::integral_constant<int64_t, kMaskWordBits>;
constexpr FullWord kFullWord{};

template <typename scalar_t, typename acc_t, typename Count>
inline uint32_t forward_word(const scalar_t* x, scalar_t* out, Count count,  // x == out in place
                             acc_t top, bool has_upper) {
  uint32_t passes[kMaskWordBits];  // packed in a second loop: 2x faster than packing inline
  for (int64_t j = 0; j < count; ++j) {
    const acc_t v = static_cast<acc_t>(x[j]);
    out[j] = static_cast<scalar_t>(clamped_relu(v, top, has_upper));
    passes[j] = relu_passes_gradient(v, top, has_upper);
  }
  uint32_t bits = 0;
  for (int64_t j = 0; j < count; ++j) bits |= mask_bit_if(passes[j], j);
  return bits;
}

// The bits are first spread into one float each: the select loop over that array
// vectorises, where testing the bits inside it does not (8x slower, measured).
template <typename scalar_t, typename Count>
inline void backward_word(const scalar_t* __restrict__ grad, scalar_t* __restrict__ dx, uint32_t bits, Count count) {
  float passes[kMaskWordBits];
  for (int64_t j = 0; j < count; ++j) passes[j] = static_cast<float>(mask_passes(bits, j));
  for (int64_t j = 0; j < count; ++j) dx[j] = guided_gradient(grad[j], passes[j] != 0.0f);
}

// Runs the forward over x (read as laid out) into out (same layout; may be x) and mask.
void forward_cpu(const at::Tensor& x, const at::Tensor& out, const at::Tensor& mask, std::optional<double> upper) {
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "guided_relu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    uint32_t* words = reinterpret_cast<uint32_t*>(mask.mutable_data_ptr<int32_t>());
    const acc_t top = static_cast<acc_t>(upper.value_or(0.0));
    const bool has_upper = upper.has_value();
    at::parallel_for(0, mask.numel(), kWordGrain, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t first = w * kMaskWordBits;
        words[w] = n - first >= kMaskWordBits
                       ? forward_word(x_data + first, out_data + first, kFullWord, top, has_upper)
                       : forward_word(x_data + first, out_data + first, n - first, top, has_upper);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> guided_relu_cpu(const at::Tensor& input,
                                                   std::optional<double> upper) {
  check_floating(input, "x");
  const at::Tensor x = input.contiguous(guided_relu_layout(input));
  at::Tensor out = at::empty_like(x);
  at::Tensor mask = at::empty({mask_words(x.numel())}, x.options().dtype(at::kInt));
  forward_cpu(x, out, mask, upper);
  return {out, mask};
}

at::Tensor guided_relu_inplace_cpu(at::Tensor& x, std::optional<double> upper) {
  return guided_relu_in_place(x, upper, guided_relu_cpu, forward_cpu);
}

at::Tensor guided_relu_backward_cpu(const at::Tensor& grad_output, const at::Tensor& mask,
                                    bool channels_last, int64_t copies) {
  const at::Tensor grad = backward_input_in_mask_order(grad_output, mask, channels_last, copies);
  at::Tensor grad_input = at::empty_like(grad);
  const int64_t n = grad.numel() / copies;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "guided_relu_backward_cpu", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* dx = grad_input.mutable_data_ptr<scalar_t>();
    const uint32_t* words = reinterpret_cast<const uint32_t*>(mask.const_data_ptr<int32_t>());
    at::parallel_for(0, mask.numel(), kWordGrain, [&](int64_t begin, int64_t end) {
      for (int64_t k = 0; k < copies; ++k) {
        for (int64_t w = begin; w < end; ++w) {
          const int64_t first = k * n + w * kMaskWordBits, count = n - w * kMaskWordBits;
          if (count >= kMaskWordBits) {
            backward_word(g + first, dx + first, words[w], kFullWord);
          } else {
            backward_word(g + first, dx + first, words[w], count);
          }
        }
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfastviz, CPU, m) {
  m.impl("guided_relu", &guided_relu_cpu);
  m.impl("guided_relu_", &guided_relu_inplace_cpu);
  m.impl("guided_relu_backward", &guided_relu_backward_cpu);
}

}  // namespace pyfastviz
