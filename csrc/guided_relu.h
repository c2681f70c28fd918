// Host-side checks and layout rules of guided_relu, shared by its CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include "ops.h"

namespace pyfastviz {

// The kernels walk memory in order: a channels_last 4-D input is read in place,
// anything else that is not contiguous is made contiguous first.
inline at::MemoryFormat guided_relu_layout(const at::Tensor& x) {
  const bool channels_last = x.dim() == 4 && !x.is_contiguous() &&
                             x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_floating_point(), "pyfastviz::guided_relu: ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

// The kernels' clamp assumes a positive upper bound (ReLU6: 6).
inline void check_upper(std::optional<double> upper) {
  TORCH_CHECK(!upper.has_value() || *upper > 0, "pyfastviz::guided_relu: upper must be > 0 or None, got ",
              upper.value_or(0.0));
}

// guided_relu_ on one device: forward(x, out, mask, upper) writes x itself when x is laid out as
// the kernels read it; otherwise out_of_place(x, upper) gives (out, mask) and out is copied back.
// Returns the mask.
template <typename OutOfPlace, typename Forward>
at::Tensor guided_relu_in_place(at::Tensor& x, std::optional<double> upper, OutOfPlace out_of_place,
                                Forward forward) {
  check_floating(x, "x");
  check_upper(upper);
  if (!x.is_contiguous(guided_relu_layout(x))) {
    auto [out, mask] = out_of_place(x, upper);
    x.copy_(out);
    return mask;
  }
  at::Tensor mask = at::empty({mask_words(x.numel())}, x.options().dtype(at::kInt));
  forward(x, x, mask, upper);
  return mask;
}

// Returns grad_output in the memory order of the mask, and checks the mask fits it.
inline at::Tensor backward_input_in_mask_order(const at::Tensor& grad_output, const at::Tensor& mask,
                                               bool channels_last, int64_t copies) {
  check_floating(grad_output, "grad_output");
  TORCH_CHECK(copies >= 1, "pyfastviz::guided_relu_backward: copies must be >= 1, got ", copies);
  TORCH_CHECK(!channels_last || grad_output.dim() == 4,
              "pyfastviz::guided_relu_backward: channels_last needs a 4-D grad_output");
  TORCH_CHECK(grad_output.numel() % copies == 0,
              "pyfastviz::guided_relu_backward: grad_output.numel() must be a multiple of copies");
  TORCH_CHECK(mask.scalar_type() == at::kInt && mask.dim() == 1,
              "pyfastviz::guided_relu_backward: mask must be the 1-D int32 mask of guided_relu");
  const int64_t per_copy = grad_output.numel() / copies;
  TORCH_CHECK(mask.numel() == mask_words(per_copy),
              "pyfastviz::guided_relu_backward: mask has ", mask.numel(), " words, expected ",
              mask_words(per_copy), " for ", per_copy, " elements per copy");
  TORCH_CHECK(mask.device() == grad_output.device(),
              "pyfastviz::guided_relu_backward: mask and grad_output are on different devices");
  return grad_output.contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                              : at::MemoryFormat::Contiguous);
}

}  // namespace pyfastviz
