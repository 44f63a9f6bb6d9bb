// The NCCL factory in a build without NCCL (here: a CPU libtorch) explains what to do instead.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/nccl_communicator.h"

TEST(NcclCommunicatorStub, BuildWithoutNcclRefusesWithTheWayOut) {
  if (cvx::nccl_available()) GTEST_SKIP() << "this build has NCCL";
  try {
    cvx::make_nccl_communicator(MPI_COMM_NULL, 0, "world");
    FAIL() << "expected a ConfigError";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("has no NCCL"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("backend = mpi"), std::string::npos) << e.what();
  }
}
