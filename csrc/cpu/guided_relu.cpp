// CPU kernels of guided_relu: one 32-element mask word per inner step, words in parallel.
#include <array>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "guided_relu.h"

namespace pyfastviz {
namespace {

constexpr int64_t kWordGrain = at::internal::GRAIN_SIZE / kMaskWordBits;

// mask_bit(j) for each bit j of a word, read from memory so that the loops below vectorise.
constexpr std::array<uint32_t, kMaskWordBits> kMaskBits = [] {
  std::array<uint32_t, kMaskWordBits> bits{};
  for (int j = 0; j < kMaskWordBits; ++j) bits[j] = mask_bit(j);
  return bits;
}();

// One mask word: `count` (<= 32) elements, without branches on the data. Full words pass
// kFullWord, a compile-time trip count, which is what lets the compiler vectorise the loop.
using FullWord = std::integral_constant<int64_t, kMaskWordBits>;
constexpr FullWord kFullWord{};

template <typename scalar_t, typename acc_t, typename Count>
inline uint32_t forward_word(const scalar_t* x, scalar_t* out, Count count,  // x == out in place
                             scalar_t zero, scalar_t upper_as_input, acc_t upper, bool has_upper) {
  uint32_t bits = 0;
  for (int64_t j = 0; j < count; ++j) {
    const acc_t v = static_cast<acc_t>(x[j]);
    bits |= mask_bit_if(relu_passes_gradient(v, upper, has_upper), kMaskBits[j]);
    out[j] = clamped_relu(x[j], v, zero, upper_as_input, upper, has_upper);
  }
  return bits;
}

template <typename scalar_t, typename Count>
inline void backward_word(const scalar_t* __restrict__ grad, scalar_t* __restrict__ dx, uint32_t bits, Count count) {
  for (int64_t j = 0; j < count; ++j) dx[j] = guided_gradient(grad[j], mask_passes(bits, kMaskBits[j]));
}

// Without F16C at compile time c10::Half converts one element at a time in software, which made
// the fp16 kernels 10x slower than fp32 (measured): fp16 goes through ATen's vectorised casts.
bool is_half(const at::Tensor& t) { return t.scalar_type() == at::kHalf; }

// Runs the forward over x (read as laid out) into out (same layout; may be x) and mask.
void forward_cpu(const at::Tensor& x, const at::Tensor& out, const at::Tensor& mask, std::optional<double> upper) {
  if (is_half(x)) {
    const at::Tensor x_float = x.to(at::kFloat);
    forward_cpu(x_float, x_float, mask, upper);
    out.copy_(x_float);
    return;
  }
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "guided_relu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    uint32_t* words = reinterpret_cast<uint32_t*>(mask.mutable_data_ptr<int32_t>());
    const acc_t top = static_cast<acc_t>(upper.value_or(0.0));
    const scalar_t zero = static_cast<scalar_t>(0), top_as_input = static_cast<scalar_t>(top);
    const bool has_upper = upper.has_value();
    at::parallel_for(0, mask.numel(), kWordGrain, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t first = w * kMaskWordBits;
        words[w] = n - first >= kMaskWordBits
                       ? forward_word(x_data + first, out_data + first, kFullWord, zero, top_as_input, top, has_upper)
                       : forward_word(x_data + first, out_data + first, n - first, zero, top_as_input, top, has_upper);
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> guided_relu_cpu(const at::Tensor& input,
                                                   std::optional<double> upper) {
  check_floating(input, "x");
  check_upper(upper);
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
  if (is_half(grad)) {
    return guided_relu_backward_cpu(grad.to(at::kFloat), mask, channels_last, copies).to(at::kHalf);
  }
  at::Tensor grad_input = at::empty_like(grad);
  const int64_t n = grad.numel() / copies;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, grad.scalar_type(), "guided_relu_backward_cpu", [&] {
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
