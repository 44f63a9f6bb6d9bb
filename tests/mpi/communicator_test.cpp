// MpiCommunicator on 1, 2 and 4 ranks. Every rank can build every other rank's input, so each
// result is compared exactly with a reference reduced here in the backend's accumulation type.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cvx/core/error.h"
#include "cvx/dist/mpi_communicator.h"

namespace {

using cvx::CommStats;
using cvx::MpiCommunicator;
using cvx::ReduceOp;

constexpr int64_t kShard = 7;  // odd, so no chunk boundary is accidentally aligned

const std::vector<torch::ScalarType> kFloatTypes = {torch::kFloat32, torch::kFloat64, torch::kBFloat16,
                                                    torch::kFloat16};
const std::vector<torch::ScalarType> kAllTypes = {torch::kFloat32, torch::kFloat64, torch::kBFloat16,
                                                  torch::kFloat16, torch::kInt32,   torch::kInt64};

bool is_half(torch::ScalarType type) { return type == torch::kFloat16 || type == torch::kBFloat16; }
torch::ScalarType accumulation_type(torch::ScalarType type) { return is_half(type) ? torch::kFloat32 : type; }

// Rank r's input of n elements: small integers in [-4, 6], exact in every dtype and in their sums.
torch::Tensor input_of(int rank, int64_t n, torch::ScalarType type) {
  const auto j = torch::arange(n, torch::kInt64);
  return ((rank * 5 + j * 3) % 11 - 4).to(type);
}

// The element-wise reduction of every rank's input_of(r, n), reduced in the accumulation type
// and rounded once to `type`.
torch::Tensor reference(int size, int64_t n, torch::ScalarType type, ReduceOp op) {
  const auto acc = accumulation_type(type);
  torch::Tensor result = input_of(0, n, type).to(acc);
  for (int r = 1; r < size; ++r) {
    const auto x = input_of(r, n, type).to(acc);
    result = op == ReduceOp::max ? torch::maximum(result, x) : result + x;
  }
  if (op == ReduceOp::avg) result = result / size;
  return result.to(type);
}

std::string describe(torch::ScalarType type, ReduceOp op) {
  return std::string(c10::toString(type)) + " " + cvx::reduce_op_name(op);
}

// `call` throws a cvx::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "expected a cvx::Error mentioning " << parts.front();
  } catch (const cvx::Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(MpiCommunicator, DuplicatesTheWorldAndNamesTheGroup) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(comm.rank(), rank);
  EXPECT_EQ(comm.size(), size);
  EXPECT_EQ(comm.name(), "mpi:world");
  EXPECT_EQ(comm.backend(), "mpi");
  int same = 0;
  MPI_Comm_compare(comm.comm(), MPI_COMM_WORLD, &same);
  EXPECT_EQ(same, MPI_CONGRUENT);  // a duplicate, not the world itself
}

TEST(MpiCommunicator, AllGatherPlacesEveryRanksShardAtItsOffset) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  for (const auto type : kAllTypes) {
    const auto shard = input_of(comm.rank(), kShard, type);
    const auto full = torch::full({comm.size() * kShard}, 99, type);
    comm.all_gather(shard, full)->wait();
    for (int r = 0; r < comm.size(); ++r) {
      EXPECT_TRUE(torch::equal(full.slice(0, r * kShard, (r + 1) * kShard), input_of(r, kShard, type)))
          << c10::toString(type) << " chunk " << r;
    }
  }
}

TEST(MpiCommunicator, ReduceScatterGivesEachRankItsReducedChunk) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int64_t n = comm.size() * kShard;
  for (const auto type : kAllTypes) {
    for (const auto op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      if (op == ReduceOp::avg && !torch::isFloatingType(type)) continue;
      const auto shard = torch::full({kShard}, 99, type);
      comm.reduce_scatter(input_of(comm.rank(), n, type), shard, op)->wait();
      const auto expected =
          reference(comm.size(), n, type, op).slice(0, comm.rank() * kShard, (comm.rank() + 1) * kShard);
      EXPECT_TRUE(torch::equal(shard, expected)) << describe(type, op) << "\n" << shard << "\n" << expected;
    }
  }
}

TEST(MpiCommunicator, AllReduceReducesInPlace) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  for (const auto type : kAllTypes) {
    for (const auto op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      if (op == ReduceOp::avg && !torch::isFloatingType(type)) continue;
      const auto tensor = input_of(comm.rank(), kShard, type);
      comm.all_reduce(tensor, op)->wait();
      EXPECT_TRUE(torch::equal(tensor, reference(comm.size(), kShard, type, op))) << describe(type, op) << "\n"
                                                                                  << tensor;
    }
  }
}

TEST(MpiCommunicator, BroadcastCopiesTheRootsValuesToEveryRank) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int root = comm.size() - 1;
  for (const auto type : kAllTypes) {
    const auto tensor = input_of(comm.rank(), kShard, type);
    comm.broadcast(tensor, root)->wait();
    EXPECT_TRUE(torch::equal(tensor, input_of(root, kShard, type))) << c10::toString(type);
  }
}

// Rank 0 holds 1 and every other rank half an ulp of 1: summed in fp32 and rounded once, 1 + (n-1)/2
// ulp rounds up on 3 and 4 ranks, whereas adding in the 16-bit type rank by rank (each partial sum
// rounded, ties to even) never leaves 1.
TEST(MpiCommunicator, HalfPrecisionReductionsRoundOnceFromFp32) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int n = comm.size();
  for (const auto type : {torch::kBFloat16, torch::kFloat16}) {
    const double half_ulp = type == torch::kBFloat16 ? 1.0 / 256 : 1.0 / 2048;
    const double mine = comm.rank() == 0 ? 1.0 : half_ulp;
    const float exact_sum = 1.0f + static_cast<float>((n - 1) * half_ulp);  // exact in fp32
    const auto once = [&](float value) { return torch::full({kShard}, value, torch::kFloat32).to(type); };
    auto stepwise = torch::full({kShard}, 1.0, type);
    for (int r = 1; r < n; ++r) stepwise = stepwise + torch::full({kShard}, half_ulp, type);
    if (n >= 3) {
      ASSERT_FALSE(torch::equal(once(exact_sum), stepwise)) << "the values no longer tell the two roundings apart";
    }

    const auto summed = torch::full({kShard}, mine, type);
    comm.all_reduce(summed, ReduceOp::sum)->wait();
    EXPECT_TRUE(torch::equal(summed, once(exact_sum))) << c10::toString(type) << " " << summed;

    const auto averaged = torch::full({kShard}, mine, type);
    comm.all_reduce(averaged, ReduceOp::avg)->wait();
    EXPECT_TRUE(torch::equal(averaged, once(exact_sum / n))) << c10::toString(type) << " " << averaged;

    const auto shard = torch::zeros({kShard}, type);
    comm.reduce_scatter(torch::full({n * kShard}, mine, type), shard, ReduceOp::sum)->wait();
    EXPECT_TRUE(torch::equal(shard, once(exact_sum))) << c10::toString(type) << " " << shard;
  }
}

TEST(MpiCommunicator, OutstandingWorksCompleteWhenWaitedInReverseOrder) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int n = comm.size();
  const int64_t big = 262147;  // ~1 MB of fp32, odd: several pipeline segments in libnbc
  const auto gathered = torch::empty({n * kShard}, torch::kFloat32);
  const auto reduced = input_of(comm.rank(), big, torch::kFloat32);
  const auto scattered = torch::empty({kShard}, torch::kBFloat16);
  const auto broadcast = input_of(comm.rank(), kShard, torch::kInt64);
  const auto averaged = input_of(comm.rank(), kShard, torch::kFloat64);
  std::vector<cvx::WorkPtr> works;
  works.push_back(comm.all_gather(input_of(comm.rank(), kShard, torch::kFloat32), gathered));
  works.push_back(comm.all_reduce(reduced, ReduceOp::sum));
  // The input is a temporary: the Work must keep it alive.
  works.push_back(comm.reduce_scatter(input_of(comm.rank(), n * kShard, torch::kBFloat16), scattered, ReduceOp::max));
  works.push_back(comm.broadcast(broadcast, 0));
  works.push_back(comm.all_reduce(averaged, ReduceOp::avg));
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();
  for (const auto& work : works) {
    EXPECT_TRUE(work->completed());
    work->wait();  // idempotent
  }
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(torch::equal(gathered.slice(0, r * kShard, (r + 1) * kShard), input_of(r, kShard, torch::kFloat32)));
  }
  EXPECT_TRUE(torch::equal(reduced, reference(n, big, torch::kFloat32, ReduceOp::sum)));
  EXPECT_TRUE(torch::equal(scattered, reference(n, n * kShard, torch::kBFloat16, ReduceOp::max)
                                          .slice(0, comm.rank() * kShard, (comm.rank() + 1) * kShard)));
  EXPECT_TRUE(torch::equal(broadcast, input_of(0, kShard, torch::kInt64)));
  EXPECT_TRUE(torch::equal(averaged, reference(n, kShard, torch::kFloat64, ReduceOp::avg)));
}

TEST(MpiCommunicator, CompletedBecomesTrueWithoutWait) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto tensor = torch::ones({kShard});
  const auto work = comm.all_reduce(tensor, ReduceOp::sum);
  while (!work->completed()) std::this_thread::yield();
  EXPECT_TRUE(torch::equal(tensor, torch::full({kShard}, static_cast<float>(comm.size()))));
  comm.barrier();
}

TEST(MpiCommunicator, SplitIntoEvenAndOddRanksGivesIndependentGroups) {
  MpiCommunicator world(MPI_COMM_WORLD, "world");
  const int parity = world.rank() % 2;
  const auto group = world.split(parity, world.rank(), "parity");
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->name(), "mpi:parity");
  EXPECT_EQ(group->size(), (world.size() - parity + 1) / 2);
  EXPECT_EQ(group->rank(), world.rank() / 2);
  EXPECT_EQ(group->options().timeout_s, world.options().timeout_s);

  // Members in key order: world ranks parity, parity + 2, ...
  const auto members = torch::empty({group->size()}, torch::kInt64);
  group->all_gather(torch::full({1}, world.rank(), torch::kInt64), members)->wait();
  EXPECT_TRUE(torch::equal(members, torch::arange(parity, world.size(), 2, torch::kInt64))) << members;

  const auto sum = torch::full({kShard}, static_cast<double>(world.rank()), torch::kFloat32);
  group->all_reduce(sum, ReduceOp::sum)->wait();
  EXPECT_EQ(sum[0].item<float>(), static_cast<float>(members.sum().item<int64_t>()));
  group->barrier();

  // A negative color leaves a rank out.
  const auto rest = world.split(world.rank() == 0 ? -1 : 0, 0, "rest");
  if (world.rank() == 0) {
    EXPECT_EQ(rest, nullptr);
  } else {
    ASSERT_NE(rest, nullptr);
    EXPECT_EQ(rest->size(), world.size() - 1);
  }
}

TEST(MpiCommunicator, TrafficStatsFollowTheRingCosts) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const uint64_t n = static_cast<uint64_t>(comm.size());
  const auto full = torch::empty({comm.size() * kShard}, torch::kBFloat16);
  const auto tensor = torch::ones({kShard}, torch::kFloat32);
  const uint64_t full_bytes = full.nbytes();
  const uint64_t tensor_bytes = tensor.nbytes();
  comm.all_gather(torch::ones({kShard}, torch::kBFloat16), full)->wait();
  comm.reduce_scatter(full, torch::empty({kShard}, torch::kBFloat16), ReduceOp::avg)->wait();
  comm.all_reduce(tensor, ReduceOp::sum)->wait();
  comm.all_reduce(tensor, ReduceOp::max)->wait();
  comm.broadcast(tensor, 0)->wait();

  const auto& stats = comm.stats();
  EXPECT_EQ(stats.bytes[CommStats::all_gather], full_bytes * (n - 1) / n);
  EXPECT_EQ(stats.bytes[CommStats::reduce_scatter], full_bytes * (n - 1) / n);
  EXPECT_EQ(stats.bytes[CommStats::all_reduce], 2 * (2 * tensor_bytes * (n - 1) / n));
  EXPECT_EQ(stats.bytes[CommStats::broadcast], comm.rank() == 0 && n > 1 ? tensor_bytes : 0);
  EXPECT_EQ(stats.calls[CommStats::all_gather], 1u);
  EXPECT_EQ(stats.calls[CommStats::reduce_scatter], 1u);
  EXPECT_EQ(stats.calls[CommStats::all_reduce], 2u);
  EXPECT_EQ(stats.calls[CommStats::broadcast], 1u);
  uint64_t sum = 0;
  for (const auto b : stats.bytes) sum += b;
  EXPECT_EQ(stats.total_bytes(), sum);
  EXPECT_STREQ(CommStats::kind_name(CommStats::reduce_scatter), "reduce_scatter");
  comm.reset_stats();
  EXPECT_EQ(comm.stats().total_bytes(), 0u);
  EXPECT_EQ(comm.stats().calls[CommStats::all_reduce], 0u);
}

TEST(MpiCommunicator, RejectsTensorsOffTheCpuNamingTheCollective) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto device = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kMeta);
  const auto elsewhere = torch::empty({kShard}, torch::TensorOptions().device(device));
  const auto full = torch::empty({comm.size() * kShard});
  expect_error([&] { comm.all_gather(elsewhere, full); }, {"all_gather", "mpi:world", "CPU tensors"});
  expect_error([&] { comm.all_reduce(elsewhere, ReduceOp::sum); }, {"all_reduce", "CPU tensors"});
  expect_error([&] { comm.broadcast(elsewhere, 0); }, {"broadcast", "CPU tensors"});
}

TEST(MpiCommunicator, RejectsNonContiguousTensorsNamingTheCollective) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto strided = torch::zeros({kShard, 2}).select(1, 0);  // [S] with stride 2
  ASSERT_FALSE(strided.is_contiguous());
  expect_error([&] { comm.all_reduce(strided, ReduceOp::sum); }, {"all_reduce", "contiguous"});
  expect_error([&] { comm.all_gather(strided, torch::empty({comm.size() * kShard})); }, {"all_gather", "contiguous"});
  expect_error([&] { comm.broadcast(strided, 0); }, {"broadcast", "contiguous"});
}

TEST(MpiCommunicator, RejectsAFullBufferThatIsNotSizeTimesTheShard) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto shard = torch::zeros({kShard});
  const auto full = torch::zeros({comm.size() * kShard + 1});
  expect_error([&] { comm.all_gather(shard, full); }, {"all_gather", "size * shard"});
  expect_error([&] { comm.reduce_scatter(full, shard, ReduceOp::sum); }, {"reduce_scatter", "size * shard"});
  expect_error([&] { comm.all_gather(shard, torch::zeros({comm.size() * kShard}, torch::kFloat64)); },
               {"all_gather", "same dtype"});
}

TEST(MpiCommunicator, RejectsAShardThatAliasesTheFullBuffer) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto full = torch::zeros({comm.size() * kShard});
  const auto shard = full.slice(0, comm.rank() * kShard, (comm.rank() + 1) * kShard);
  expect_error([&] { comm.all_gather(shard, full); }, {"all_gather", "overlap"});
  expect_error([&] { comm.reduce_scatter(full, shard, ReduceOp::sum); }, {"reduce_scatter", "overlap"});
}

TEST(MpiCommunicator, RejectsIntegerAverageAndBadRoot) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const auto ints = torch::zeros({kShard}, torch::kInt32);
  expect_error([&] { comm.all_reduce(ints, ReduceOp::avg); }, {"all_reduce", "avg", "integer"});
  expect_error(
      [&] {
        comm.reduce_scatter(torch::zeros({comm.size() * kShard}, torch::kInt64), torch::zeros({kShard}, torch::kInt64),
                            ReduceOp::avg);
      },
      {"reduce_scatter", "avg", "integer"});
  expect_error([&] { comm.broadcast(ints, comm.size()); }, {"broadcast", "root"});
  expect_error([&] { comm.all_reduce(torch::zeros({kShard}, torch::kUInt8), ReduceOp::sum); },
               {"all_reduce", "unsupported dtype"});
}

namespace {
// Elements rank `from` sends rank `to` in the uneven all-to-all tests: differs per pair, 0 for some.
int64_t pair_count(int from, int to) { return (from * 3 + to * 2 + 1) % 4; }
// The values of that chunk: they name the sender, the receiver and the position.
torch::Tensor pair_values(int from, int to, torch::ScalarType type) {
  return (torch::arange(pair_count(from, to), torch::kInt64) % 5 + 10 * from + 50 * to - 60).to(type);
}
}  // namespace

TEST(MpiCommunicator, AllToAllDeliversUnevenChunksToTheirRanksInRankOrder) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const int me = comm.rank();
  for (const auto type : kAllTypes) {
    std::vector<int64_t> send_counts, recv_counts;
    std::vector<torch::Tensor> sent, expected;
    for (int r = 0; r < comm.size(); ++r) {
      send_counts.push_back(pair_count(me, r));
      recv_counts.push_back(pair_count(r, me));
      sent.push_back(pair_values(me, r, type));
      expected.push_back(pair_values(r, me, type));
    }
    const auto input = torch::cat(sent);
    auto output = torch::full({torch::cat(expected).numel()}, 99, type);
    comm.all_to_all(input, send_counts, output, recv_counts)->wait();
    EXPECT_TRUE(torch::equal(output, torch::cat(expected))) << c10::toString(type);
  }
}

TEST(MpiCommunicator, AllToAllCountsTheBytesSentToOtherRanks) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  std::vector<int64_t> counts(static_cast<size_t>(comm.size()), kShard);
  const auto input = torch::ones({comm.size() * kShard}, torch::kBFloat16);
  comm.all_to_all(input, counts, torch::empty_like(input), counts)->wait();
  EXPECT_EQ(comm.stats().bytes[CommStats::all_to_all], static_cast<uint64_t>((comm.size() - 1) * kShard * 2));
  EXPECT_EQ(comm.stats().calls[CommStats::all_to_all], 1u);
  EXPECT_STREQ(CommStats::kind_name(CommStats::all_to_all), "all_to_all");
}

TEST(MpiCommunicator, AllToAllRejectsCountsThatDoNotFitTheBuffers) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  const size_t n = static_cast<size_t>(comm.size());
  const std::vector<int64_t> ones(n, 1);
  const auto buffer = torch::zeros({comm.size()}, torch::kFloat32);
  expect_error([&] { comm.all_to_all(buffer, std::vector<int64_t>(n + 1, 1), torch::zeros_like(buffer), ones); },
               {"all_to_all", "send_counts has", "one per rank"});
  expect_error([&] { comm.all_to_all(torch::zeros({comm.size() + 1}), ones, torch::zeros_like(buffer), ones); },
               {"all_to_all", "input has", "send_counts add up to"});
  std::vector<int64_t> negative = ones;
  negative[0] = -1;
  expect_error([&] { comm.all_to_all(buffer, ones, torch::zeros_like(buffer), negative); }, {"negative count -1"});
  expect_error([&] { comm.all_to_all(buffer, ones, buffer, ones); }, {"overlap"});
}
