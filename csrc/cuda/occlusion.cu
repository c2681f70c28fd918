// CUDA kernels of the occlusion ops on a 2-D grid: y over the rows (copies or heat maps),
// x over the elements of one image, indexed in int32_t. The build kernel picks image or
// baseline by whether the row's window covers the element; the heat-map kernel gathers each
// pixel's mean over the windows covering it (no atomics, deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "occlusion.h"
#include "launch.cuh"

namespace pyfastviz {
namespace {

constexpr int64_t kElementsPerThread = 4;  // amortises a thread's per-row index math
constexpr int64_t kMaxGridY = 65535;

// x: enough blocks for kElementsPerThread elements of one image per thread; y: one block row per
// image row, up to CUDA's limit (the kernels' loops stride on over both).
dim3 occlusion_grid(int64_t numel, int64_t rows) {
  const int64_t per_block = kThreadsPerBlock * kElementsPerThread;
  return dim3(static_cast<unsigned>((numel + per_block - 1) / per_block),
              static_cast<unsigned>(std::min(rows, kMaxGridY)));
}

template <typename scalar_t>
__global__ void occlusion_batch_kernel(const scalar_t* __restrict__ images, const scalar_t* __restrict__ baseline,
                                       scalar_t* __restrict__ out, OcclusionGeometry g, bool channels_last,
                                       int32_t n, int32_t first, int32_t rows) {
  const int64_t numel = occlusion_image_numel(g);
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {  // int64_t: row + gridDim.y may pass 2^31
    const int32_t copy = static_cast<int32_t>(row / n);
    const int64_t source = (row - static_cast<int64_t>(copy) * n) * numel;
    scalar_t* dst = out + row * numel;
    int32_t start[3];
    occlusion_window_start(g, first + copy, start);
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < numel; j += step) {
      dst[j] = occlusion_takes_baseline(g, channels_last, start, static_cast<int32_t>(j)) ? baseline[source + j]
                                                                                          : images[source + j];
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void occlusion_scatter_kernel(const scalar_t* __restrict__ drops, scalar_t* __restrict__ heat,
                                         OcclusionGeometry g, int64_t positions, int64_t rows) {
  const int64_t numel = occlusion_image_numel(g);
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < numel; j += step) {
      int32_t index[3];
      occlusion_element_index(g, false, static_cast<int32_t>(j), index);
      heat[row * numel + j] = static_cast<scalar_t>(
          occlusion_pixel_mean<acc_t>(g, drops + row * positions, index[0], index[1], index[2]));
    }
  }
}

void occlusion_batch_cuda(const at::Tensor& images, const at::Tensor& baseline, at::IntArrayRef window,
                          at::IntArrayRef stride, int64_t first, const at::Tensor& out) {
  const OcclusionGeometry g = occlusion_geometry(images.sizes().slice(1), window, stride);
  check_occlusion_batch(images, baseline, out, g, first);
  const c10::cuda::CUDAGuard guard(out.device());
  if (out.numel() == 0) return;
  // the host checks keep first, the rows and N (at most the rows) in int32_t
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "occlusion_batch_cuda", [&] {
    occlusion_batch_kernel<scalar_t><<<occlusion_grid(occlusion_image_numel(g), out.size(0)), kThreadsPerBlock, 0,
                                       at::cuda::getCurrentCUDAStream()>>>(
        images.const_data_ptr<scalar_t>(), baseline.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g,
        is_channels_last(out), static_cast<int32_t>(images.size(0)), static_cast<int32_t>(first),
        static_cast<int32_t>(out.size(0)));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor occlusion_scatter_cuda(const at::Tensor& drops_in, at::IntArrayRef window, at::IntArrayRef stride,
                                  at::IntArrayRef size) {
  const OcclusionGeometry g = occlusion_geometry(size, window, stride);
  check_occlusion_drops(drops_in, g);
  const c10::cuda::CUDAGuard guard(drops_in.device());
  const at::Tensor drops = drops_in.contiguous();
  at::Tensor heat = at::empty({drops.size(0), g.size[0], g.size[1], g.size[2]}, drops.options());
  if (heat.numel() == 0) return heat;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, drops.scalar_type(), "occlusion_scatter_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    occlusion_scatter_kernel<scalar_t, acc_t><<<occlusion_grid(occlusion_image_numel(g), drops.size(0)),
                                                kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        drops.const_data_ptr<scalar_t>(), heat.mutable_data_ptr<scalar_t>(), g, drops.size(1), drops.size(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return heat;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfastviz, CUDA, m) {
  m.impl("occlusion_batch", &occlusion_batch_cuda);
  m.impl("occlusion_scatter", &occlusion_scatter_cuda);
}

}  // namespace pyfastviz
