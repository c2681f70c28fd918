// CUDA kernels of the occlusion ops, one thread per output element: the build kernel picks
// image or baseline by whether the row's window covers the element; the heat-map kernel
// gathers each pixel's mean over the windows covering it (no atomics, deterministic).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "occlusion.h"
#include "launch.cuh"

namespace pyfastviz {
namespace {

template <typename scalar_t>
__global__ void occlusion_batch_kernel(const scalar_t* __restrict__ images, const scalar_t* __restrict__ baseline,
                                       scalar_t* __restrict__ out, OcclusionGeometry g, bool channels_last,
                                       int64_t n, int64_t first, int64_t total) {
  const int64_t numel = occlusion_image_numel(g);
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t row = i / numel, j = i - row * numel;
    const int64_t source = (row % n) * numel + j;
    int64_t start[3], index[3];
    occlusion_window_start(g, first + row / n, start);
    occlusion_element_index(g, channels_last, j, index);
    out[i] = occlusion_covers(g, start, index) ? baseline[source] : images[source];
  }
}

template <typename scalar_t, typename acc_t>
__global__ void occlusion_scatter_kernel(const scalar_t* __restrict__ drops, scalar_t* __restrict__ heat,
                                         OcclusionGeometry g, int64_t positions, int64_t total) {
  const int64_t numel = occlusion_image_numel(g);
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    int64_t index[3];
    occlusion_element_index(g, false, i % numel, index);
    heat[i] = static_cast<scalar_t>(
        occlusion_pixel_mean<acc_t>(g, drops + (i / numel) * positions, index[0], index[1], index[2]));
  }
}

void occlusion_batch_cuda(const at::Tensor& images, const at::Tensor& baseline, at::IntArrayRef window,
                          at::IntArrayRef stride, int64_t first, const at::Tensor& out) {
  const OcclusionGeometry g = occlusion_geometry(images.sizes().slice(1), window, stride);
  check_occlusion_batch(images, baseline, out, g, first);
  const c10::cuda::CUDAGuard guard(out.device());
  const int64_t total = out.numel();
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "occlusion_batch_cuda", [&] {
    occlusion_batch_kernel<scalar_t><<<blocks_for(total), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        images.const_data_ptr<scalar_t>(), baseline.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g,
        is_channels_last(out), images.size(0), first, total);
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
  const int64_t total = heat.numel();
  if (total == 0) return heat;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, drops.scalar_type(), "occlusion_scatter_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    occlusion_scatter_kernel<scalar_t, acc_t><<<blocks_for(total), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        drops.const_data_ptr<scalar_t>(), heat.mutable_data_ptr<scalar_t>(), g, drops.size(1), total);
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
