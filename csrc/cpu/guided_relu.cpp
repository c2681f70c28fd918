// CPU kernels of guided_relu: one 32-element mask word per inner step, words in parallel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "guided_relu.h"

namespace pyfastviz {
namespace {

constexpr int64_t kWordGrain = at::internal::GRAIN_SIZE / kMaskWordBits;

std::tuple<at::Tensor, at::Tensor> guided_relu_cpu(const at::Tensor& input,
                                                   std::optional<double> upper) {
  check_floating(input, "x");
  const at::Tensor x = input.contiguous(guided_relu_layout(input));
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  at::Tensor mask = at::empty({mask_words(n)}, x.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "guided_relu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    uint32_t* words = reinterpret_cast<uint32_t*>(mask.mutable_data_ptr<int32_t>());
    const acc_t top = static_cast<acc_t>(upper.value_or(0.0));
    const bool has_upper = upper.has_value();
    at::parallel_for(0, mask.numel(), kWordGrain, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        uint32_t bits = 0;
        const int64_t last = std::min((w + 1) * kMaskWordBits, n);
        for (int64_t i = w * kMaskWordBits; i < last; ++i) {
          const acc_t v = static_cast<acc_t>(x_data[i]);
          out_data[i] = static_cast<scalar_t>(clamped_relu(v, top, has_upper));
          if (relu_passes_gradient(v, top, has_upper)) bits |= mask_bit(i);
        }
        words[w] = bits;
      }
    });
  });
  return {out, mask};
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
      for (int64_t w = begin; w < end; ++w) {
        const uint32_t bits = words[w];
        const int64_t last = std::min((w + 1) * kMaskWordBits, n);
        for (int64_t i = w * kMaskWordBits; i < last; ++i) {
          const bool passes = bits & mask_bit(i);
          for (int64_t k = 0; k < copies; ++k) {
            dx[k * n + i] = guided_gradient(g[k * n + i], passes);
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
  m.impl("guided_relu_backward", &guided_relu_backward_cpu);
}

}  // namespace pyfastviz
