#include "cvx/core/parallel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace cvx {

void parallel_chunks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn, int threads) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t wanted = threads > 0 ? threads : at::get_num_threads();
  const int64_t workers = std::max<int64_t>(1, std::min(wanted, (n + grain - 1) / grain));
  if (workers == 1) {
    fn(0, n);
    return;
  }
  const int64_t chunk = (n + workers - 1) / workers;
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int64_t begin) {
    try {
      fn(begin, std::min(n, begin + chunk));
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int64_t begin = chunk; begin < n; begin += chunk) pool.emplace_back(run, begin);
  run(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace cvx
