#include "cvx/core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

TEST(ParallelChunks, CoversTheRangeOnceOnSeveralThreads) {
  for (int64_t n : {1, 2, 7, 100}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::mutex mutex;
    std::set<std::thread::id> threads;
    cvx::parallel_chunks(
        n, 1,
        [&](int64_t begin, int64_t end) {
          ASSERT_LT(begin, end);
          for (int64_t i = begin; i < end; ++i) ++hits[static_cast<size_t>(i)];
          const std::lock_guard<std::mutex> lock(mutex);
          threads.insert(std::this_thread::get_id());
        },
        /*threads=*/3);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n << " i " << i;
    EXPECT_EQ(threads.size(), static_cast<size_t>(std::min<int64_t>(n, 3))) << "n " << n;
  }
  int calls = 0;
  cvx::parallel_chunks(
      0, 1, [&](int64_t, int64_t) { ++calls; }, 3);
  EXPECT_EQ(calls, 0);
  // The grain bounds the number of chunks.
  std::atomic<int> chunks{0};
  cvx::parallel_chunks(
      10, 6, [&](int64_t, int64_t) { ++chunks; }, 8);
  EXPECT_EQ(chunks.load(), 2);
}

TEST(ParallelChunks, RethrowsAChunksException) {
  std::atomic<int> finished{0};
  EXPECT_THROW(cvx::parallel_chunks(
                   4, 1,
                   [&](int64_t begin, int64_t) {
                     if (begin == 2) throw std::runtime_error("chunk failed");
                     ++finished;
                   },
                   4),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 3) << "the other chunks still run to the end";
}
