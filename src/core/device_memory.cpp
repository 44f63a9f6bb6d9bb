#include "cvx/core/device_memory.h"

#ifdef CVX_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace cvx {

int64_t cuda_peak_allocated_bytes(int device) {
#ifdef CVX_WITH_CUDA
  // Index 0 is the aggregate over the small and large pools in every libtorch (StatType::AGGREGATE,
  // whose namespace changed in 2.x when the statistics moved to c10/core/CachingDeviceAllocator.h).
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[0].peak;
#else
  (void)device;
  return 0;
#endif
}

void reset_cuda_peak_memory(int device) {
#ifdef CVX_WITH_CUDA
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
#else
  (void)device;
#endif
}

}  // namespace cvx
