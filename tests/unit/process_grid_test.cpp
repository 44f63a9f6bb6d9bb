// ProcessGrid (dist/process_grid.h): the sizes derived from [parallel] replicate_size, shard_size
// and sequence_parallel_size, each rank's coordinates, and grids that are not the world refused
// naming the options.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/process_grid.h"

namespace {

cvx::ProcessGrid grid(int world, int64_t replicate, int64_t shard, int64_t sequence) {
  cvx::ParallelConfig c;
  c.replicate_size = replicate;
  c.shard_size = shard;
  c.sequence_parallel_size = sequence;
  return cvx::ProcessGrid::resolve(c, world);
}

std::string error_of(int world, int64_t replicate, int64_t shard, int64_t sequence) {
  try {
    grid(world, replicate, shard, sequence);
  } catch (const cvx::ConfigError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(ProcessGrid, SizesLeftZeroAreDerivedFromTheWorld) {
  const auto plain = grid(8, 0, 0, 1);
  EXPECT_EQ((std::vector<int>{plain.replicate, plain.shard, plain.sequence}), (std::vector<int>{1, 8, 1}));
  EXPECT_EQ(plain.describe(), "");
  const auto sp = grid(8, 0, 0, 2);
  EXPECT_EQ((std::vector<int>{sp.replicate, sp.shard, sp.sequence}), (std::vector<int>{1, 4, 2}));
  const auto by_replicas = grid(16, 2, 0, 2);
  EXPECT_EQ((std::vector<int>{by_replicas.replicate, by_replicas.shard}), (std::vector<int>{2, 4}));
  const auto by_shards = grid(16, 0, 2, 2);
  EXPECT_EQ((std::vector<int>{by_shards.replicate, by_shards.shard}), (std::vector<int>{4, 2}));
  const auto both = grid(16, 4, 2, 2);
  EXPECT_EQ(both.world_size(), 16);
  EXPECT_EQ(both.data_parallel_size(), 8);
  EXPECT_EQ(both.describe(), "4 replicas x 2 shards x 2 sequence");
}

TEST(ProcessGrid, CoordinatesPutSequenceGroupsOnConsecutiveRanksThenReplicas) {
  const auto g = grid(16, 2, 4, 2);
  // rank = (replicate x 4 + shard) x 2 + sequence
  for (int rank = 0; rank < 16; ++rank) {
    EXPECT_EQ((g.replicate_rank(rank) * g.shard + g.shard_rank(rank)) * g.sequence + g.sequence_rank(rank), rank);
    EXPECT_EQ(g.data_parallel_rank(rank), rank / 2);
  }
  EXPECT_EQ(g.replicate_rank(7), 0);
  EXPECT_EQ(g.replicate_rank(8), 1);
  EXPECT_EQ(g.shard_rank(7), 3);
  EXPECT_EQ(g.sequence_rank(7), 1);
}

TEST(ProcessGrid, GridsThatAreNotTheWorldAreRefusedNamingTheOptions) {
  EXPECT_NE(error_of(6, 0, 0, 4).find("sequence_parallel_size = 4 does not divide the 6 rank(s)"), std::string::npos);
  EXPECT_NE(error_of(8, 3, 0, 2).find("replicate_size = 3 does not divide the 4 data-parallel rank(s)"),
            std::string::npos)
      << error_of(8, 3, 0, 2);
  EXPECT_NE(error_of(8, 0, 3, 1).find("shard_size = 3 does not divide the 8 data-parallel rank(s)"), std::string::npos);
  EXPECT_NE(error_of(16, 2, 2, 2)
                .find("replicate_size = 2 x shard_size = 2 x sequence_parallel_size = 2 is not the "
                      "16 rank(s)"),
            std::string::npos)
      << error_of(16, 2, 2, 2);
}
