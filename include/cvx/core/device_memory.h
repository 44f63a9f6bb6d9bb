// Peak memory of a CUDA device as torch's caching allocator counts it (what
// torch.cuda.max_memory_allocated reports), in one place because the allocator's statistics types
// moved between libtorch versions. Without CUDA in the build: 0 and no-ops.
#pragma once
#include <cstdint>

namespace cvx {

// Bytes of tensors allocated at the peak since the last reset, on `device`.
int64_t cuda_peak_allocated_bytes(int device);
void reset_cuda_peak_memory(int device);

}  // namespace cvx
