// make_process_groups (dist/process_grid.h) on the real MPI world: every grid the world allows
// gives each rank the groups its coordinates say (members listed by all-gathering world ranks).
#include <gtest/gtest.h>

#include "cvx/dist/mpi_communicator.h"
#include "cvx/dist/process_grid.h"

namespace {

// The world ranks of `group`'s members, in group order.
std::vector<int64_t> members(cvx::Communicator& group, int world_rank) {
  auto all = torch::empty({group.size()}, torch::kInt64);
  group.all_gather(torch::full({1}, world_rank, torch::kInt64), all)->wait();
  return std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
}

}  // namespace

TEST(ProcessGrid, GroupsHoldTheRanksTheirCoordinatesSay) {
  cvx::MpiCommunicator world(MPI_COMM_WORLD, "world");
  const int size = world.size(), rank = world.rank();
  for (int sequence = 1; sequence <= size; ++sequence) {
    if (size % sequence != 0) continue;
    for (int replicate = 1; replicate <= size / sequence; ++replicate) {
      if ((size / sequence) % replicate != 0) continue;
      cvx::ParallelConfig config;
      config.sequence_parallel_size = sequence;
      config.replicate_size = replicate;
      const auto grid = cvx::ProcessGrid::resolve(config, size);
      const auto groups = cvx::make_process_groups(world, grid);
      const std::string label = std::to_string(size) + " ranks as " + std::to_string(replicate) + " x " +
                                std::to_string(grid.shard) + " x " + std::to_string(sequence);
      // One replica: the S x P consecutive ranks from replicate_rank x S x P.
      std::vector<int64_t> shard, replicas, sequence_group;
      const int per_replica = grid.shard * grid.sequence;
      for (int r = 0; r < size; ++r) {
        if (grid.replicate_rank(r) == grid.replicate_rank(rank)) shard.push_back(r);
        if (r % per_replica == rank % per_replica) replicas.push_back(r);
        if (grid.data_parallel_rank(r) == grid.data_parallel_rank(rank)) sequence_group.push_back(r);
      }
      EXPECT_EQ(members(*groups.shard, rank), shard) << label;
      ASSERT_EQ(groups.replicate != nullptr, replicate > 1) << label;
      if (groups.replicate) EXPECT_EQ(members(*groups.replicate, rank), replicas) << label;
      ASSERT_EQ(groups.sequence != nullptr, sequence > 1) << label;
      if (groups.sequence) EXPECT_EQ(members(*groups.sequence, rank), sequence_group) << label;
    }
  }
}
