// NcclCommunicator on one rank (a world of one: every collective, all-to-all included, is a local
// copy or reduction over one contributor). Needs a CUDA device and a build with NCCL; every test skips otherwise.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/core/mpi_env.h"
#include "cvx/dist/nccl_communicator.h"

namespace {

using cvx::ReduceOp;

#define CVX_REQUIRE_NCCL_GPU()                                                \
  do {                                                                        \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";       \
    if (!cvx::nccl_available()) GTEST_SKIP() << "this cvx build has no NCCL"; \
  } while (0)

// MPI only starts in tests that get this far; finalised once after the last test.
class MpiFinalizer : public testing::Environment {
 public:
  void TearDown() override { cvx::mpi_finalize(); }
};
testing::Environment* const g_mpi_finalizer = testing::AddGlobalTestEnvironment(new MpiFinalizer);

std::unique_ptr<cvx::Communicator> make_comm() {
  const auto& world = cvx::mpi_init(nullptr, nullptr);
  return cvx::make_nccl_communicator(world.world, 0, "gpu_test");
}

torch::TensorOptions on_gpu(torch::ScalarType type) {
  return torch::TensorOptions().dtype(type).device(torch::kCUDA, 0);
}

}  // namespace

TEST(NcclCommunicator, CollectivesOnOneRankGiveTheInputBack) {
  CVX_REQUIRE_NCCL_GPU();
  auto comm = make_comm();
  ASSERT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->name(), "nccl:gpu_test");
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const auto values = (torch::arange(13, on_gpu(torch::kFloat32)) - 6).to(type);  // exact in bf16
    const auto full = torch::zeros({13}, on_gpu(type));
    comm->all_gather(values, full)->wait();
    EXPECT_TRUE(torch::equal(full.cpu(), values.cpu())) << c10::toString(type);
    for (const auto op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      const auto shard = torch::zeros({13}, on_gpu(type));
      comm->reduce_scatter(values, shard, op)->wait();
      EXPECT_TRUE(torch::equal(shard.cpu(), values.cpu())) << c10::toString(type) << " " << cvx::reduce_op_name(op);
      const auto tensor = values.clone();
      comm->all_reduce(tensor, op)->wait();
      EXPECT_TRUE(torch::equal(tensor.cpu(), values.cpu())) << c10::toString(type) << " " << cvx::reduce_op_name(op);
    }
    const auto tensor = values.clone();
    comm->broadcast(tensor, 0)->wait();
    EXPECT_TRUE(torch::equal(tensor.cpu(), values.cpu()));
    // All-to-all (grouped send/recv) with a world of one: the whole input goes to this rank.
    const auto received = torch::zeros({13}, on_gpu(type));
    comm->all_to_all(values, {13}, received, {13})->wait();
    EXPECT_TRUE(torch::equal(received.cpu(), values.cpu())) << c10::toString(type) << " all_to_all";
  }
  comm->barrier();
  EXPECT_EQ(comm->stats().total_bytes(), 0u);  // a world of one sends nothing
  EXPECT_EQ(comm->stats().calls[cvx::CommStats::all_reduce], 6u);
  EXPECT_EQ(comm->stats().calls[cvx::CommStats::all_to_all], 2u);
}

// The input comes out of a long chain of kernels on the compute stream and the result is read by
// the compute stream right after wait(): without the stream orderings in both directions the
// collective would read an unfinished input or the reader an unfinished output.
TEST(NcclCommunicator, WaitOrdersLaterComputeAfterTheCollective) {
  CVX_REQUIRE_NCCL_GPU();
  auto comm = make_comm();
  const int64_t n = int64_t{1} << 24;
  auto shard = torch::zeros({n}, on_gpu(torch::kFloat32));
  for (int i = 0; i < 50; ++i) shard.add_(1);  // 50 kernels still queued when the collective is issued
  const auto full = torch::zeros({n}, on_gpu(torch::kFloat32));
  auto work = comm->all_gather(shard, full);
  shard = torch::Tensor();  // the Work keeps the input alive
  work->wait();
  const auto total = full.sum();  // on the compute stream, after wait()
  EXPECT_EQ(total.item<float>(), 50.0f * static_cast<float>(n));
  torch::cuda::synchronize();
  EXPECT_TRUE(work->completed());
}

TEST(NcclCommunicator, SplitGivesAGroupOfOneOnOneRank) {
  CVX_REQUIRE_NCCL_GPU();
  auto comm = make_comm();
  auto group = comm->split(0, 0, "solo");
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->size(), 1);
  EXPECT_EQ(group->name(), "nccl:solo");
  const auto tensor = torch::ones({7}, on_gpu(torch::kFloat32));
  group->all_reduce(tensor, ReduceOp::sum)->wait();
  EXPECT_EQ(tensor.sum().item<float>(), 7.0f);
}

TEST(NcclCommunicator, RejectsCpuTensorsNamingTheCollective) {
  CVX_REQUIRE_NCCL_GPU();
  auto comm = make_comm();
  try {
    comm->all_reduce(torch::zeros({4}), ReduceOp::sum);
    FAIL() << "expected an error";
  } catch (const cvx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}
