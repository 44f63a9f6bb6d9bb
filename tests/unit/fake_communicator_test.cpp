// FakeCommunicator: rank 3 of a world of 8 in one process.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/fake_communicator.h"

namespace {

using cvx::CommStats;
using cvx::FakeCommunicator;
using cvx::ReduceOp;

constexpr int kRank = 3;
constexpr int kSize = 8;
constexpr int64_t kShard = 5;

torch::Tensor values(int64_t n, torch::ScalarType type) { return (torch::arange(n, torch::kInt64) % 13 - 6).to(type); }

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const cvx::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(FakeCommunicator, ReportsTheRankAndSizeItPlays) {
  FakeCommunicator comm(kRank, kSize);
  EXPECT_EQ(comm.rank(), kRank);
  EXPECT_EQ(comm.size(), kSize);
  EXPECT_EQ(comm.backend(), "fake");
  EXPECT_EQ(comm.name(), "fake:world");
  EXPECT_EQ(FakeCommunicator(0, 2, {}, "shard").name(), "fake:shard");
  EXPECT_THROW(FakeCommunicator(8, 8), cvx::Error);
  EXPECT_THROW(FakeCommunicator(0, 0), cvx::Error);
}

TEST(FakeCommunicator, AllGatherWritesThisRanksShardIntoEveryChunk) {
  FakeCommunicator comm(kRank, kSize);
  for (const auto type : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
    const auto shard = values(kShard, type);
    const auto full = torch::zeros({kSize * kShard}, type);
    const auto work = comm.all_gather(shard, full);
    EXPECT_TRUE(work->completed());
    work->wait();
    EXPECT_TRUE(torch::equal(full.view({kSize, kShard}), shard.expand({kSize, kShard}))) << full;
  }
}

TEST(FakeCommunicator, ReduceScatterTakesThisRanksChunkTimesSizeForSum) {
  FakeCommunicator comm(kRank, kSize);
  for (const auto type : {torch::kFloat32, torch::kFloat64, torch::kInt32}) {
    const auto full = values(kSize * kShard, type);
    const auto chunk = full.slice(0, kRank * kShard, (kRank + 1) * kShard);
    const auto shard = torch::zeros({kShard}, type);
    comm.reduce_scatter(full, shard, ReduceOp::sum)->wait();
    EXPECT_TRUE(torch::equal(shard, chunk * kSize)) << shard;
    comm.reduce_scatter(full, shard, ReduceOp::max)->wait();
    EXPECT_TRUE(torch::equal(shard, chunk));
    if (torch::isFloatingType(type)) {
      comm.reduce_scatter(full, shard, ReduceOp::avg)->wait();
      EXPECT_TRUE(torch::equal(shard, chunk));
    }
  }
}

// In a world of 7, 7 x (x = 1 + one bf16 ulp) formed in fp32 and rounded once is 7.0625; adding
// x rank by rank in bf16 gives 7.03125.
TEST(FakeCommunicator, HalfPrecisionSumsAreRoundedOnceFromFp32) {
  const int size = 7;
  FakeCommunicator comm(1, size);
  const auto x = torch::full({kShard}, 1.0 + 1.0 / 128, torch::kBFloat16);
  const auto once = (x.to(torch::kFloat32) * size).to(torch::kBFloat16);
  auto stepwise = x.clone();
  for (int r = 1; r < size; ++r) stepwise = stepwise + x;
  ASSERT_FALSE(torch::equal(once, stepwise)) << "the values no longer tell the two roundings apart";
  const auto tensor = x.clone();
  comm.all_reduce(tensor, ReduceOp::sum)->wait();
  EXPECT_TRUE(torch::equal(tensor, once)) << tensor;
  const auto shard = torch::zeros({kShard}, torch::kBFloat16);
  comm.reduce_scatter(x.repeat({size}), shard, ReduceOp::sum)->wait();
  EXPECT_TRUE(torch::equal(shard, once)) << shard;
}

TEST(FakeCommunicator, AllReduceMultipliesSumsAndKeepsAvgMaxAndBroadcast) {
  FakeCommunicator comm(kRank, kSize);
  const auto original = values(kShard, torch::kFloat32);
  auto tensor = original.clone();
  comm.all_reduce(tensor, ReduceOp::sum)->wait();
  EXPECT_TRUE(torch::equal(tensor, original * kSize));
  for (const auto op : {ReduceOp::avg, ReduceOp::max}) {
    tensor = original.clone();
    comm.all_reduce(tensor, op)->wait();
    EXPECT_TRUE(torch::equal(tensor, original)) << cvx::reduce_op_name(op);
  }
  tensor = original.clone();
  comm.broadcast(tensor, 0)->wait();
  EXPECT_TRUE(torch::equal(tensor, original));
  comm.barrier();
}

TEST(FakeCommunicator, StatsEqualThoseOfARealWorldOfEight) {
  FakeCommunicator comm(kRank, kSize);
  const auto full = torch::zeros({kSize * kShard}, torch::kBFloat16);
  const auto shard = torch::zeros({kShard}, torch::kBFloat16);
  const auto tensor = torch::zeros({kShard}, torch::kFloat32);
  comm.all_gather(shard, full);
  comm.reduce_scatter(full, shard, ReduceOp::avg);
  comm.reduce_scatter(full, shard, ReduceOp::sum);
  comm.all_reduce(tensor, ReduceOp::sum);
  comm.broadcast(tensor, kRank);  // root: sends the buffer
  comm.broadcast(tensor, 0);      // not root: sends nothing
  // Ring costs in a world of 8: (n-1)/n of the full buffer per all-gather / reduce-scatter,
  // 2(n-1)/n per all-reduce, the buffer once from the broadcast root.
  const uint64_t full_bytes = kSize * kShard * 2, tensor_bytes = kShard * 4;
  const auto& stats = comm.stats();
  EXPECT_EQ(stats.bytes[CommStats::all_gather], full_bytes * 7 / 8);
  EXPECT_EQ(stats.bytes[CommStats::reduce_scatter], 2 * full_bytes * 7 / 8);
  EXPECT_EQ(stats.bytes[CommStats::all_reduce], 2 * tensor_bytes * 7 / 8);
  EXPECT_EQ(stats.bytes[CommStats::broadcast], tensor_bytes);
  EXPECT_EQ(stats.calls[CommStats::reduce_scatter], 2u);
  EXPECT_EQ(stats.calls[CommStats::broadcast], 2u);
  EXPECT_EQ(stats.total_bytes(), full_bytes * 7 / 8 * 3 + 2 * tensor_bytes * 7 / 8 + tensor_bytes);

  FakeCommunicator alone(0, 1);
  alone.all_reduce(tensor, ReduceOp::sum);
  EXPECT_EQ(alone.stats().total_bytes(), 0u);  // a world of one sends nothing
  EXPECT_EQ(alone.stats().calls[CommStats::all_reduce], 1u);
}

TEST(FakeCommunicator, RejectsWhatARealBackendRejects) {
  FakeCommunicator comm(kRank, kSize);
  const auto shard = torch::zeros({kShard});
  EXPECT_NE(
      error_of([&] { comm.all_gather(shard, torch::zeros({kSize * kShard - 1})); }).find("all_gather on fake:world"),
      std::string::npos);
  const auto full = torch::zeros({kSize * kShard});
  EXPECT_NE(error_of([&] { comm.reduce_scatter(full, full.slice(0, 0, kShard), ReduceOp::sum); }).find("overlap"),
            std::string::npos);
  EXPECT_NE(error_of([&] { comm.all_reduce(torch::zeros({4}, torch::kInt64), ReduceOp::avg); }).find("all_reduce"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              comm.all_reduce(torch::zeros({4, 2}).t(), ReduceOp::sum);
            }).find("contiguous"),
            std::string::npos);
  EXPECT_NE(error_of([&] { comm.broadcast(shard, kSize); }).find("root"), std::string::npos);
}

TEST(FakeCommunicator, SplitIsRefusedWithAWayOut) {
  FakeCommunicator comm(kRank, kSize);
  const auto message = error_of([&] { comm.split(0, 0, "shard"); });
  EXPECT_NE(message.find("no peers"), std::string::npos) << message;
  EXPECT_NE(message.find("construct a FakeCommunicator"), std::string::npos) << message;
}

// Every fake peer sends what this rank sends itself: chunk `rank` of the input, fitted to each
// receive count (cut, or zero-padded), and the stats count what goes to the other seven ranks.
TEST(FakeCommunicator, AllToAllReceivesThisRanksOwnChunkFromEveryRank) {
  FakeCommunicator comm(kRank, kSize);
  std::vector<int64_t> send(kSize, 2), recv(kSize, 3);
  send[kRank] = 3;
  recv[0] = 1;
  const auto input = torch::arange(2 * (kSize - 1) + 3, torch::kFloat32);  // own chunk at [6, 9)
  auto output = torch::full({1 + 3 * (kSize - 1)}, 99.0f);
  comm.all_to_all(input, send, output, recv)->wait();
  EXPECT_TRUE(torch::equal(output.narrow(0, 0, 1), torch::tensor({6.0f})));
  for (int i = 1; i < kSize; ++i)
    EXPECT_TRUE(torch::equal(output.narrow(0, 1 + 3 * (i - 1), 3), torch::tensor({6.0f, 7.0f, 8.0f}))) << i;
  EXPECT_EQ(comm.stats().bytes[CommStats::all_to_all], static_cast<uint64_t>((input.numel() - 3) * 4));

  // A peer sending more than this rank sends itself: the rest of that peer's slot is zero.
  const std::vector<int64_t> two(kSize, 2);
  std::vector<int64_t> three(kSize, 3);
  three[kRank] = 2;
  const auto small = torch::arange(2 * kSize, torch::kFloat32);  // own chunk: {6, 7}
  auto out = torch::full({3 * kSize - 1}, 99.0f);
  comm.all_to_all(small, two, out, three)->wait();
  EXPECT_TRUE(torch::equal(out.narrow(0, 0, 3), torch::tensor({6.0f, 7.0f, 0.0f})));
  EXPECT_TRUE(torch::equal(out.narrow(0, 3 * kRank, 2), torch::tensor({6.0f, 7.0f})));
}
