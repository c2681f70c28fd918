// Host-side checks and geometry of the occlusion ops, shared by their CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

#include "ops.h"

namespace pyfastviz {

inline OcclusionGeometry occlusion_geometry(at::IntArrayRef size, at::IntArrayRef window, at::IntArrayRef stride) {
  TORCH_CHECK(size.size() == 3 && window.size() == 3 && stride.size() == 3,
              "pyfastviz occlusion: size, window and stride need 3 entries (channels, rows, cols)");
  OcclusionGeometry g{};
  for (int d = 0; d < 3; ++d) {
    TORCH_CHECK(window[d] >= 1 && stride[d] >= 1, "pyfastviz occlusion: window and stride must be >= 1");
    TORCH_CHECK(window[d] <= size[d], "pyfastviz occlusion: window ", window, " exceeds the image ", size);
    g.size[d] = size[d];
    g.window[d] = window[d];
    g.stride[d] = stride[d];
    g.count[d] = occlusion_positions_along(size[d], window[d], stride[d]);
  }
  return g;
}

inline int64_t occlusion_positions(const OcclusionGeometry& g) { return g.count[0] * g.count[1] * g.count[2]; }

inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// The kernels index within one image in int32_t (ops.h): its elements must fit (every window
// starts inside the image, so the starts fit too).
inline void check_int32_indexing(const OcclusionGeometry& g) {
  TORCH_CHECK(occlusion_image_numel(g) <= std::numeric_limits<int32_t>::max(),
              "pyfastviz occlusion: an image's element count must stay under 2^31, got size ", at::IntArrayRef(g.size));
}

// Checks the build op's tensors: images and baseline (N, C, H, W) and out (rows, C, H, W),
// all laid out alike (contiguous or channels_last); rows a whole number of copies of N (none for N = 0).
inline void check_occlusion_batch(const at::Tensor& images, const at::Tensor& baseline, const at::Tensor& out,
                                  const OcclusionGeometry& g, int64_t first) {
  TORCH_CHECK(images.dim() == 4 && images.sizes() == baseline.sizes(),
              "pyfastviz::occlusion_batch: images and baseline must both be (N, C, H, W)");
  TORCH_CHECK(out.dim() == 4 && out.sizes().slice(1) == images.sizes().slice(1),
              "pyfastviz::occlusion_batch: out must be (rows, C, H, W) like images");
  TORCH_CHECK(images.scalar_type() == out.scalar_type() && baseline.scalar_type() == out.scalar_type(),
              "pyfastviz::occlusion_batch: images, baseline and out must share a dtype");
  TORCH_CHECK(images.device() == out.device() && baseline.device() == out.device(),
              "pyfastviz::occlusion_batch: images, baseline and out must be on one device");
  const bool channels_last = is_channels_last(out);
  const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(out.is_contiguous(layout) && images.is_contiguous(layout) && baseline.is_contiguous(layout),
              "pyfastviz::occlusion_batch: images, baseline and out must be laid out alike, contiguous or channels_last");
  const int64_t n = images.size(0);
  TORCH_CHECK(n > 0 ? out.size(0) % n == 0 : out.size(0) == 0,
              "pyfastviz::occlusion_batch: out rows must be a multiple of N");
  TORCH_CHECK(out.size(0) <= std::numeric_limits<int32_t>::max(), "pyfastviz::occlusion_batch: out must have under 2^31 rows");
  const int64_t count = n > 0 ? out.size(0) / n : 0;
  TORCH_CHECK(first >= 0 && first + count <= occlusion_positions(g), "pyfastviz::occlusion_batch: positions ", first,
              "..", first + count, " exceed the ", occlusion_positions(g), " window positions");
  check_int32_indexing(g);
}

inline void check_occlusion_drops(const at::Tensor& drops, const OcclusionGeometry& g) {
  TORCH_CHECK(drops.dim() == 2 && drops.size(1) == occlusion_positions(g),
              "pyfastviz::occlusion_scatter: drops must be (rows, positions) with ", occlusion_positions(g), " positions");
  TORCH_CHECK(drops.is_floating_point(), "pyfastviz::occlusion_scatter: drops must be floating point");
  check_int32_indexing(g);
}

}  // namespace pyfastviz
