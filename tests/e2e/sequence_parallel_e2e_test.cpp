// cvx_train with [parallel] sequence_parallel_size (Ulysses; dist/sequence_parallel.h) on tiny
// models: P = 2 trains the losses of P = 1 for the same global batch, composes with data
// parallelism (world 4 = 2 data-parallel x 2 sequence), resumes across P in both directions, and a
// P that the heads or the world do not allow is refused before any weight is read; validation
// videos rendered by sequence groups equal those of whole-sequence ranks.
#include <gtest/gtest.h>

#include "cvx/data/image_io.h"
#include "test_util.h"
#include "train_fixture.h"

namespace fs = std::filesystem;
using cvx::test::expect_same_losses;
using cvx::test::fixture;
using cvx::test::Fixture;
using cvx::test::train;
using cvx::test::TrainRun;

namespace {

const std::string kSequence2 = " --parallel.sequence_parallel_size 2";

}  // namespace

TEST(SequenceParallelE2E, TenStepsWithTwoSequenceRanksTrackOneRank) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("sp_e2e_t2v");
  const std::string args = "--train.train_steps 10 --train.learning_rate 5e-3";
  const TrainRun one = train(f, 1, dir / "p1", args);
  ASSERT_EQ(one.rc, 0) << one.output;
  const TrainRun two = train(f, 2, dir / "p2", args + kSequence2);
  ASSERT_EQ(two.rc, 0) << two.output;
  EXPECT_NE(two.output.find("sequence parallel: 2 ranks per sample"), std::string::npos) << two.output;
  expect_same_losses(one, two, "P = 2 vs P = 1");
  // The exchanges are counted per step (bench/sp_cpu.sh reports them); none without a group.
  EXPECT_GT(two.metrics.back().value("sequence_bytes", uint64_t{0}), 0u);
  EXPECT_FALSE(one.metrics.back().contains("sequence_bytes"));
}

TEST(SequenceParallelE2E, FourRanksAsTwoDataParallelTimesTwoSequenceEqualTwoDataParallelRanksAndOneRank) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("sp_e2e_hybrid");
  const std::string args = "--train.train_steps 4 --train.training_type sft --train.learning_rate 1e-4";
  const TrainRun dp = train(f, 2, dir / "dp2", args);
  ASSERT_EQ(dp.rc, 0) << dp.output;
  const TrainRun hybrid = train(f, 4, dir / "dp2sp2", args + kSequence2);
  ASSERT_EQ(hybrid.rc, 0) << hybrid.output;
  EXPECT_NE(hybrid.output.find("global batch 2 = 1 per rank x 1 accumulation x 2 data-parallel rank(s) (4 ranks"),
            std::string::npos)
      << hybrid.output;
  expect_same_losses(dp, hybrid, "2 x 2 vs 2 x 1");
  // And one rank with the same global batch by accumulation (two micro-steps of one sample).
  const TrainRun one = train(f, 1, dir / "one", args + " --train.gradient_accumulation_steps 2");
  ASSERT_EQ(one.rc, 0) << one.output;
  expect_same_losses(one, hybrid, "2 x 2 vs 1 rank accumulating 2");
}

TEST(SequenceParallelE2E, ImageToVideoWithThePerStepEncodeTracksOneRank) {
  const Fixture& f = fixture("5b-i2v");
  const auto dir = cvx::test::scratch_dir("sp_e2e_i2v");
  const std::string args = "--train.train_steps 3 --train.enable_tiling false";
  const TrainRun one = train(f, 1, dir / "p1", args);
  ASSERT_EQ(one.rc, 0) << one.output;
  const TrainRun two = train(f, 2, dir / "p2", args + kSequence2);
  ASSERT_EQ(two.rc, 0) << two.output;
  expect_same_losses(one, two, "I2V P = 2 vs P = 1");
}

TEST(SequenceParallelE2E, CheckpointsResumeAcrossSequenceParallelSizesBothWays) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("sp_e2e_resume");
  const std::string args = "--train.train_steps 4 --train.checkpointing_steps 2";
  const TrainRun straight = train(f, 1, dir / "straight", args);
  ASSERT_EQ(straight.rc, 0) << straight.output;
  // Saved with P = 2 (2 ranks), resumed with P = 1 (1 rank); and the reverse.
  const TrainRun saved2 = train(f, 2, dir / "from2", args + kSequence2);
  ASSERT_EQ(saved2.rc, 0) << saved2.output;
  fs::remove_all(dir / "from2" / "checkpoint-4");
  const TrainRun resumed1 = train(f, 1, dir / "from2", args + " --train.resume_from_checkpoint latest");
  ASSERT_EQ(resumed1.rc, 0) << resumed1.output;
  expect_same_losses(straight, resumed1, "P = 2 -> P = 1");
  fs::remove_all(dir / "straight" / "checkpoint-4");
  const TrainRun resumed2 = train(f, 2, dir / "straight", args + kSequence2 + " --train.resume_from_checkpoint latest");
  ASSERT_EQ(resumed2.rc, 0) << resumed2.output;
  expect_same_losses(straight, resumed2, "P = 1 -> P = 2");
}

TEST(SequenceParallelE2E, ValidationBySequenceGroupsRendersTheVideosOfWholeSequenceRanks) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("sp_e2e_validation");
  // Three prompts over 2 data-parallel ranks: the second round has a dummy (here a whole group).
  const std::string args =
      "--train.train_steps 2 --train.learning_rate 5e-2 --log_all_ranks true --validation.enabled true "
      "--validation.num_inference_steps 2 --validation.vae_tiling false "
      "--validation.prompts 'a red ball:::a blue cube:::a third prompt'";
  const TrainRun dp = train(f, 2, dir / "dp2", args);
  ASSERT_EQ(dp.rc, 0) << dp.output;
  const TrainRun sp = train(f, 4, dir / "dp2sp2", args + kSequence2);
  ASSERT_EQ(sp.rc, 0) << sp.output;
  expect_same_losses(dp, sp, "2 x 2 vs 2 x 1");
  // Group 0 (ranks 0, 1) renders prompts 0 and 2, group 1 (ranks 2, 3) prompt 1; the first rank
  // of a group writes.
  for (const auto& [rank, count] : std::vector<std::pair<std::string, std::string>>{
           {"[r0]", "2 video(s)"}, {"[r1]", "0 video(s)"}, {"[r2]", "1 video(s)"}, {"[r3]", "0 video(s)"}})
    EXPECT_NE(sp.output.find(rank + " validation at step 2: this rank rendered " + count), std::string::npos)
        << rank << "\n"
        << sp.output;
  EXPECT_NE(sp.output.find("3 video(s) on 2 sequence group(s) of 2 rank(s)"), std::string::npos) << sp.output;
  const fs::path a = dir / "dp2" / "validation" / "step-2", b = dir / "dp2sp2" / "validation" / "step-2";
  for (const char* name : {"000_a_red_ball.mp4", "001_a_blue_cube.mp4", "002_a_third_prompt.mp4"})
    EXPECT_TRUE(fs::exists(b / name)) << name;
  // Compared through the lossless contact sheets (first, middle and last frame of every video):
  // the same model after the same two steps, each denoising step on token slices (fp32 summation
  // order, ~1e-7 relative), so equal up to one 8-bit level.
  const auto x = cvx::read_image(a / "contact_sheet.png").to(torch::kInt32);
  const auto y = cvx::read_image(b / "contact_sheet.png").to(torch::kInt32);
  ASSERT_EQ(x.sizes(), y.sizes());
  EXPECT_LE((x - y).abs().max().item<int>(), 1);
}

TEST(SequenceParallelE2E, SizesTheHeadsOrTheWorldDoNotAllowAreRefusedBeforeLoadingWeights) {
  const Fixture& f = fixture("5b");  // tiny: 2 attention heads
  const auto dir = cvx::test::scratch_dir("sp_e2e_bad");
  const TrainRun heads = train(f, 4, dir / "heads", "--train.train_steps 1 --parallel.sequence_parallel_size 4");
  EXPECT_NE(heads.rc, 0);
  EXPECT_NE(heads.output.find("does not divide the transformer's 2 attention heads"), std::string::npos)
      << heads.output;
  EXPECT_NE(heads.output.find("use one of 1, 2"), std::string::npos) << heads.output;
  const TrainRun world = train(f, 2, dir / "world", "--train.train_steps 1 --parallel.sequence_parallel_size 4");
  EXPECT_NE(world.rc, 0);
  EXPECT_NE(world.output.find("does not divide the 2 rank(s)"), std::string::npos) << world.output;
  for (const TrainRun* r : {&heads, &world})
    EXPECT_EQ(r->output.find("transformer: "), std::string::npos) << "no weights loaded";
}
