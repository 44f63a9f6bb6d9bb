#include <gtest/gtest.h>

#include <set>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"

TEST(MpiEnv, WorldAndNodeLayoutAreConsistent) {
  const auto& w = cvx::mpi_world();
  EXPECT_GE(w.size, 1);
  EXPECT_GE(w.rank, 0);
  EXPECT_LT(w.rank, w.size);
  EXPECT_EQ(w.thread_level, MPI_THREAD_MULTIPLE);
  // Everything runs on one machine here: node-local == world, one node.
  int sum_local = 0;
  CVX_MPI(MPI_Allreduce(&w.local_size, &sum_local, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  EXPECT_EQ(sum_local, w.size * w.local_size / w.num_nodes * w.num_nodes / w.local_size * w.local_size);
  EXPECT_GE(w.num_nodes, 1);
  // Local ranks are a permutation of 0..local_size-1 on each node.
  std::vector<int> locals(w.size);
  CVX_MPI(MPI_Allgather(&w.local_rank, 1, MPI_INT, locals.data(), 1, MPI_INT, MPI_COMM_WORLD));
  std::multiset<int> seen(locals.begin(), locals.end());
  for (int l = 0; l < w.local_size; ++l) EXPECT_EQ(seen.count(l), static_cast<size_t>(w.num_nodes));
}

TEST(MpiEnv, FailedCallBecomesErrorWithMessage) {
  int value = 0;
  try {
    CVX_MPI(MPI_Bcast(&value, 1, MPI_INT, 9999, MPI_COMM_WORLD));  // root out of range
    FAIL() << "expected an exception";
  } catch (const cvx::SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("MPI_Bcast"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("MPI_ERR"), std::string::npos) << e.what();
  }
}
