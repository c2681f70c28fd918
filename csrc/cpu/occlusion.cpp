// CPU kernels of the occlusion ops, on the per-element math of the CUDA kernels (ops.h), so
// these tests prove it: each element of a copy is the baseline's where the row's window
// covers it, else the image's; the heat map gathers each pixel's mean over the windows covering it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "occlusion.h"

namespace pyfastviz {
namespace {

void occlusion_batch_cpu(const at::Tensor& images, const at::Tensor& baseline, at::IntArrayRef window,
                         at::IntArrayRef stride, int64_t first, const at::Tensor& out) {
  const OcclusionGeometry g = occlusion_geometry(images.sizes().slice(1), window, stride);
  check_occlusion_batch(images, baseline, out, g, first);
  const bool channels_last = is_channels_last(out);
  const int64_t n = images.size(0);
  const int32_t numel = static_cast<int32_t>(occlusion_image_numel(g));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "occlusion_batch_cpu", [&] {
    const scalar_t* image_data = images.const_data_ptr<scalar_t>();
    const scalar_t* baseline_data = baseline.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, out.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* src = image_data + (row % n) * numel;
        const scalar_t* fill = baseline_data + (row % n) * numel;
        scalar_t* dst = out_data + row * numel;
        int32_t start[3];
        occlusion_window_start(g, static_cast<int32_t>(first + row / n), start);
        for (int32_t j = 0; j < numel; ++j) {
          dst[j] = occlusion_takes_baseline(g, channels_last, start, j) ? fill[j] : src[j];
        }
      }
    });
  });
}

at::Tensor occlusion_scatter_cpu(const at::Tensor& drops_in, at::IntArrayRef window, at::IntArrayRef stride,
                                 at::IntArrayRef size) {
  const OcclusionGeometry g = occlusion_geometry(size, window, stride);
  check_occlusion_drops(drops_in, g);
  const at::Tensor drops = drops_in.contiguous();
  at::Tensor heat = at::empty({drops.size(0), g.size[0], g.size[1], g.size[2]}, drops.options());
  const int64_t numel = occlusion_image_numel(g), positions = drops.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, drops.scalar_type(), "occlusion_scatter_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* drop_data = drops.const_data_ptr<scalar_t>();
    scalar_t* heat_data = heat.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, drops.size(0) * numel, at::internal::GRAIN_SIZE / 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int32_t index[3];
        occlusion_element_index(g, false, static_cast<int32_t>(i % numel), index);
        heat_data[i] = static_cast<scalar_t>(occlusion_pixel_mean<acc_t>(
            g, drop_data + (i / numel) * positions, index[0], index[1], index[2]));
      }
    });
  });
  return heat;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfastviz, CPU, m) {
  m.impl("occlusion_batch", &occlusion_batch_cpu);
  m.impl("occlusion_scatter", &occlusion_scatter_cpu);
}

}  // namespace pyfastviz
