// Fork-join over an index range for cvx's own CPU loops (frame conversion, normalisation).
//
// Not at::parallel_for: with libtorch's OpenMP backend that template expands `#pragma omp
// parallel` inside the caller's translation unit, and cvx is not compiled with OpenMP (clang's
// runtime would be a second one beside torch's libgomp), so there it silently runs on one thread.
#pragma once
#include <cstdint>
#include <functional>

namespace cvx {

// Calls fn(begin, end) on consecutive chunks covering [0, n), on up to `threads` threads (0:
// torch's intra-op thread count), each chunk at least `grain` long. The calling thread takes the
// first chunk. The first exception thrown by any chunk is rethrown after all have finished.
void parallel_chunks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int threads = 0);

}  // namespace cvx
