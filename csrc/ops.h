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

PFV_HOST_DEVICE bool mask_passes(uint32_t word, int64_t i) { return (word >> (i & 31)) & 1u; }

// Element i's contribution to its mask word: branch-free, as the sign of x is random.
PFV_HOST_DEVICE uint32_t mask_bit_if(bool passes, int64_t i) {
  return static_cast<uint32_t>(passes) << (i & 31);
}

// Bitwise & and | (not && and ||): no branch on the data, so loops vectorise.
template <typename T>
PFV_HOST_DEVICE bool relu_passes_gradient(T x, T upper, bool has_upper) {
  return (x > T(0)) & (!has_upper | (x < upper));
}

// NaN stays NaN, as in torch.relu / torch.nn.functional.hardtanh.
template <typename T>
PFV_HOST_DEVICE T clamped_relu(T x, T upper, bool has_upper) {
  const T floored = x <= T(0) ? T(0) : x;
  return (has_upper & (floored > upper)) ? upper : floored;
}

template <typename T>
PFV_HOST_DEVICE T guided_gradient(T grad, bool passes) {
  return (passes & (grad > T(0))) ? grad : T(0);
}

}  // namespace pyfastviz
