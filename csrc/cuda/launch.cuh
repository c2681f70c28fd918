// Launch geometry shared by the CUDA kernels: grid-stride loops over n elements.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace pyfastviz {

constexpr int kThreadsPerBlock = 256;

// Enough blocks for one element per thread, capped at CUDA's grid limit (the loops stride on).
inline int64_t blocks_for(int64_t n) {
  const int64_t wanted = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return std::max<int64_t>(1, std::min<int64_t>(wanted, std::numeric_limits<int32_t>::max()));
}

}  // namespace pyfastviz
