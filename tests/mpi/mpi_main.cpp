// Test driver for the MPI suite: every rank runs every test; failures from all ranks are gathered
// to rank 0 and printed, and every rank exits non-zero if any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cvx/core/mpi_env.h"

namespace {
class FailureCollector : public testing::EmptyTestEventListener {
 public:
  // The test's name is kept here: UnitTest::current_test_info() inside OnTestPartResult would
  // take the mutex gtest holds while it reports a result, and the failing rank would hang.
  void OnTestStart(const testing::TestInfo& info) override {
    current_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestEnd(const testing::TestInfo&) override { current_.clear(); }
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    if (!current_.empty()) failures_ << "[" << current_ << "] ";
    failures_ << (result.file_name() ? result.file_name() : "?") << ":" << result.line_number() << ": "
              << result.summary() << "\n";
  }
  std::string text() const { return failures_.str(); }

 private:
  std::string current_;
  std::ostringstream failures_;
};
}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const auto& world = cvx::mpi_init(&argc, &argv);
  auto& listeners = testing::UnitTest::GetInstance()->listeners();
  auto* collector = new FailureCollector;
  listeners.Append(collector);
  if (world.rank != 0) delete listeners.Release(listeners.default_result_printer());

  const int local = RUN_ALL_TESTS();

  // Gather every rank's failure text on rank 0.
  const std::string mine = collector->text();
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(world.size);
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::vector<int> offsets(world.size, 0);
  int total = 0;
  for (int r = 0; r < world.size; ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::string all(world.rank == 0 ? total : 0, '\0');
  MPI_Gatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  int any_failed = 0;
  MPI_Allreduce(&local, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (world.rank == 0) {
    for (int r = 0; r < world.size; ++r) {
      if (lengths[r] == 0) continue;
      std::cerr << "---- failures on rank " << r << " of " << world.size << ":\n" << all.substr(offsets[r], lengths[r]);
    }
    std::cerr << (any_failed ? "MPI tests FAILED" : "MPI tests passed") << " on " << world.size << " ranks"
              << std::endl;
  }
  cvx::mpi_finalize();
  return any_failed ? 1 : 0;
}
