// [parallel] backend resolution.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/nccl_communicator.h"
#include "cvx/dist/world_communicator.h"

TEST(WorldCommunicator, AutoPicksMpiOnTheCpuAndNcclOnGpusWhenBuiltWithIt) {
  EXPECT_EQ(cvx::resolve_backend("auto", torch::kCPU), "mpi");
  EXPECT_EQ(cvx::resolve_backend("mpi", torch::kCPU), "mpi");
  EXPECT_EQ(cvx::resolve_backend("auto", torch::Device(torch::kCUDA, 0)), cvx::nccl_available() ? "nccl" : "mpi");
}

TEST(WorldCommunicator, ImpossibleBackendsAreRefusedWithTheFix) {
  try {
    cvx::resolve_backend("nccl", torch::kCPU);
    ADD_FAILURE() << "nccl accepted on the CPU";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(e.message().find("use backend = mpi"), std::string::npos) << e.message();
  }
  try {
    cvx::resolve_backend("mpi", torch::Device(torch::kCUDA, 0));
    ADD_FAILURE() << "mpi accepted for CUDA tensors";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(e.message().find("CPU tensors only"), std::string::npos) << e.message();
  }
}
