// cvx_train on a world = replicate x shard x sequence grid ([parallel] replicate_size, shard_size,
// sequence_parallel_size; dist/process_grid.h) on tiny models: hybrid sharding (shards within a
// replica, gradients averaged across replicas) trains the losses of plain sharding over the same
// data-parallel world, also composed with sequence parallelism; its checkpoints (one copy, written
// by the first replica) resume on a plain world; the plan line shows the grid.
#include <gtest/gtest.h>

#include "test_util.h"
#include "train_fixture.h"

namespace fs = std::filesystem;
using cvx::test::expect_same_losses;
using cvx::test::fixture;
using cvx::test::Fixture;
using cvx::test::train;
using cvx::test::TrainRun;

TEST(ProcessGridE2E, TwoReplicasOfTwoShardsTrainTheLossesOfFourShardsAndResumeOnTwoRanks) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("grid_e2e_hybrid");
  const std::string args =
      "--train.train_steps 4 --train.checkpointing_steps 2 --train.training_type sft --train.learning_rate 1e-4";
  const TrainRun plain = train(f, 4, dir / "plain", args);
  ASSERT_EQ(plain.rc, 0) << plain.output;
  const TrainRun hybrid = train(f, 4, dir / "hybrid", args + " --parallel.replicate_size 2");
  ASSERT_EQ(hybrid.rc, 0) << hybrid.output;
  EXPECT_NE(hybrid.output.find("x 4 data-parallel rank(s) (4 ranks = 2 replicas x 2 shards x 1 sequence)"),
            std::string::npos)
      << hybrid.output;
  EXPECT_NE(hybrid.output.find("the engine shards over 2 rank(s)"), std::string::npos) << hybrid.output;
  expect_same_losses(plain, hybrid, "2 replicas x 2 shards vs 4 shards");
  // One copy of the sharded state: the first replica's two shards.
  const fs::path state = dir / "hybrid" / "checkpoint-2" / "state";
  EXPECT_TRUE(fs::exists(state / "shard-00000-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(state / "shard-00001-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(state / "shard-00002-of-00004.safetensors"));
  // Resumed from step 2 on a plain world of 2 ranks (global batch 2 x 2 as before via accumulation).
  fs::remove_all(dir / "hybrid" / "checkpoint-4");
  const TrainRun resumed = train(f, 2, dir / "hybrid",
                                 args + " --train.gradient_accumulation_steps 2 --train.resume_from_checkpoint latest");
  ASSERT_EQ(resumed.rc, 0) << resumed.output;
  ASSERT_EQ(resumed.metrics.size(), 4u);
  for (size_t s = 2; s < 4; ++s)
    EXPECT_NEAR(resumed.metrics[s]["loss"].get<double>(), plain.metrics[s]["loss"].get<double>(),
                1e-4 * std::abs(plain.metrics[s]["loss"].get<double>()))
        << "step " << s + 1;
}

TEST(ProcessGridE2E, TwoReplicasOfOneSequenceGroupTrainTheLossesOfTwoDataParallelRanks) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("grid_e2e_sequence");
  const std::string args = "--train.train_steps 4 --train.learning_rate 5e-3";
  const TrainRun dp = train(f, 2, dir / "dp2", args);
  ASSERT_EQ(dp.rc, 0) << dp.output;
  const TrainRun grid =
      train(f, 4, dir / "grid", args + " --parallel.sequence_parallel_size 2 --parallel.shard_size 1");
  ASSERT_EQ(grid.rc, 0) << grid.output;
  EXPECT_NE(grid.output.find("(4 ranks = 2 replicas x 1 shard x 2 sequence)"), std::string::npos) << grid.output;
  expect_same_losses(dp, grid, "2 replicas x 2 sequence vs 2 data-parallel ranks");
}

TEST(ProcessGridE2E, GridsThatAreNotTheWorldAreRefusedBeforeLoadingWeights) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("grid_e2e_bad");
  const TrainRun r = train(f, 4, dir / "bad", "--train.train_steps 1 --parallel.replicate_size 3");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.output.find("replicate_size = 3 does not divide the 4 data-parallel rank(s)"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("transformer: "), std::string::npos) << "no weights loaded";
}
