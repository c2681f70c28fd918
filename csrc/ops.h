// Per-element math shared by the CPU and CUDA kernels, so the CPU tests prove the CUDA math.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PFV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PFV_HOST_DEVICE inline
#endif

namespace pyfastviz {

// ---- guided ReLU -------------------------------------------------------------------
// Forward: y = clamp(x, 0, upper) (upper optional: ReLU when absent, ReLU6 when 6).
// The mask keeps one bit per element, in the memory order of x: bit (i & 31) of 32-bit
// word (i >> 5) is set where the activation passes gradient, 0 < x < upper.
// Backward (guided): dx = dy where the bit is set and dy > 0, else 0.

constexpr int kMaskWordBits = 32;

PFV_HOST_DEVICE int64_t mask_words(int64_t numel) {
  return (numel + kMaskWordBits - 1) / kMaskWordBits;
}

PFV_HOST_DEVICE int64_t mask_word_index(int64_t i) { return i >> 5; }

// Element i's bit in its mask word. The CPU kernels read these from a table (kMaskBits):
// a loop over one word with a table load vectorises; one with a shift by the loop index
// does not without AVX2 (6x slower, measured).
PFV_HOST_DEVICE constexpr uint32_t mask_bit(int64_t i) { return 1u << (i & 31); }

PFV_HOST_DEVICE bool mask_passes(uint32_t word, uint32_t bit) { return (word & bit) != 0u; }

// An element's contribution to its mask word: branch-free, as the sign of x is random (an
// and with 0 or ~0; `passes ? bit : 0` keeps GCC from vectorising the CPU loop).
PFV_HOST_DEVICE uint32_t mask_bit_if(bool passes, uint32_t bit) {
  return bit & (0u - static_cast<uint32_t>(passes));
}

// Bitwise & and | (not && and ||): no branch on the data, so loops vectorise.
template <typename T>
PFV_HOST_DEVICE bool relu_passes_gradient(T x, T upper, bool has_upper) {
  return (x > T(0)) & (!has_upper | (x < upper));
}

// y = clamp(x, 0, upper); NaN stays NaN, as in torch.relu / torch.nn.functional.hardtanh.
// The tests are on v, x's value in the accumulation type T; y is picked from x itself and the
// bounds in x's type S (zero, upper_as_input), so nothing is rounded back to S: on the CPU
// that rounding kept the bf16 loop from vectorising (10x slower, measured).
template <typename S, typename T>
PFV_HOST_DEVICE S clamped_relu(S x, T v, S zero, S upper_as_input, T upper, bool has_upper) {
  const S floored = v <= T(0) ? zero : x;
  return (has_upper & (v > upper)) ? upper_as_input : floored;
}

template <typename T>
PFV_HOST_DEVICE T guided_gradient(T grad, bool passes) {
  return (passes & (grad > T(0))) ? grad : T(0);
}

}  // namespace pyfastviz

namespace pyfastviz {

// ---- occlusion ---------------------------------------------------------------------
// A window of extent window[d] slides over one image of size[d] (d = channel, row, col)
// in steps of stride[d]; count[d] positions per dimension, as Captum's Occlusion: the
// last window may run past the edge and is cropped there. A stride larger than the window
// (which Captum refuses) leaves out the positions that would start past the edge. Positions
// are numbered row-major over (count[0], count[1], count[2]).
// Within one image the kernels index in int32_t (the host checks keep an image under 2^31
// elements, so its positions fit too): 32-bit division is several times cheaper on GPUs.

struct OcclusionGeometry {
  int64_t size[3];
  int64_t window[3];
  int64_t stride[3];
  int64_t count[3];
};

PFV_HOST_DEVICE int64_t occlusion_positions_along(int64_t size, int64_t window, int64_t stride) {
  const int64_t covering = (size - window + stride - 1) / stride + 1;  // Captum's: the last one reaches the edge
  const int64_t inside = (size + stride - 1) / stride;  // those starting inside the image: fewer if stride > window
  return covering < inside ? covering : inside;
}

PFV_HOST_DEVICE int64_t occlusion_image_numel(const OcclusionGeometry& g) {
  return g.size[0] * g.size[1] * g.size[2];
}

// (channel, row, col) of element j of one image stored contiguous (C, H, W) or channels_last (H, W, C).
PFV_HOST_DEVICE void occlusion_element_index(const OcclusionGeometry& g, bool channels_last, int32_t j,
                                             int32_t index[3]) {
  const int32_t fast = static_cast<int32_t>(channels_last ? g.size[0] : g.size[2]);
  const int32_t middle = static_cast<int32_t>(channels_last ? g.size[2] : g.size[1]);
  const int32_t line = j / fast, rest = line / middle;  // one division each; the remainders by multiplication
  const int32_t inner = j - line * fast, centre = line - rest * middle;
  index[0] = channels_last ? inner : rest;
  index[1] = channels_last ? rest : centre;
  index[2] = channels_last ? centre : inner;
}

// First covered index of position p along each dimension.
PFV_HOST_DEVICE void occlusion_window_start(const OcclusionGeometry& g, int32_t position, int32_t start[3]) {
  for (int d = 2; d >= 0; --d) {
    const int32_t count = static_cast<int32_t>(g.count[d]), next = position / count;
    start[d] = (position - next * count) * static_cast<int32_t>(g.stride[d]);
    position = next;
  }
}

PFV_HOST_DEVICE bool occlusion_covers(const OcclusionGeometry& g, const int32_t start[3], const int32_t index[3]) {
  bool inside = true;  // index - start < window: start + window could overflow
  for (int d = 0; d < 3; ++d) {
    inside &= (index[d] >= start[d]) & (index[d] - start[d] < static_cast<int32_t>(g.window[d]));
  }
  return inside;
}

// Whether element j of the copy whose window starts at start takes the baseline (else the image).
PFV_HOST_DEVICE bool occlusion_takes_baseline(const OcclusionGeometry& g, bool channels_last, const int32_t start[3],
                                              int32_t j) {
  int32_t index[3];
  occlusion_element_index(g, channels_last, j, index);
  return occlusion_covers(g, start, index);
}

// Positions along dimension d whose window covers index x: first..last (none when first > last).
PFV_HOST_DEVICE void occlusion_covering(const OcclusionGeometry& g, int d, int64_t x, int64_t* first,
                                        int64_t* last) {
  const int64_t low = x - g.window[d] + 1;
  *first = low <= 0 ? 0 : (low + g.stride[d] - 1) / g.stride[d];
  const int64_t high = x / g.stride[d];
  *last = high < g.count[d] - 1 ? high : g.count[d] - 1;
}

// Captum's attribution of one pixel: the mean score drop over the positions covering it
// (0 where none does, which only a stride larger than the window leaves).
template <typename acc_t, typename scalar_t>
PFV_HOST_DEVICE acc_t occlusion_pixel_mean(const OcclusionGeometry& g, const scalar_t* drops, int64_t c, int64_t h,
                                           int64_t w) {
  int64_t first[3], last[3];
  const int64_t index[3] = {c, h, w};
  for (int d = 0; d < 3; ++d) occlusion_covering(g, d, index[d], &first[d], &last[d]);
  acc_t total = acc_t(0);
  int64_t covering = 0;
  for (int64_t pc = first[0]; pc <= last[0]; ++pc) {
    for (int64_t ph = first[1]; ph <= last[1]; ++ph) {
      for (int64_t pw = first[2]; pw <= last[2]; ++pw) {
        total += static_cast<acc_t>(drops[(pc * g.count[1] + ph) * g.count[2] + pw]);
        ++covering;
      }
    }
  }
  return covering ? total / static_cast<acc_t>(covering) : acc_t(0);
}

}  // namespace pyfastviz
