// The checkpoint folders of a run: which count as complete, what `latest` and an explicit path
// resolve to, and the rotation that keeps the newest and never the resumed-from one.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/core/error.h"
#include "cvx/train/checkpoint_folders.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace cvx;

namespace {
void make_checkpoint(const fs::path& dir, int64_t step, bool complete = true) {
  const fs::path c = dir / checkpoint_folder_name(step);
  fs::create_directories(c / "state");
  if (complete) std::ofstream(c / kTrainerStateFile) << "{}";
}
std::vector<int64_t> steps(const fs::path& dir) {
  std::vector<int64_t> out;
  for (const auto& c : list_checkpoints(dir)) out.push_back(c.step);
  return out;
}
}  // namespace

TEST(CheckpointFolders, OnlyCompleteCheckpointsCountInStepOrder) {
  const auto dir = test::scratch_dir("ckpt_list");
  make_checkpoint(dir, 100);
  make_checkpoint(dir, 20);
  make_checkpoint(dir, 300, /*complete=*/false);  // crashed before trainer_state.json
  fs::create_directories(dir / "checkpoint-400.partial");
  fs::create_directories(dir / "checkpoint-x1");
  EXPECT_EQ(steps(dir), (std::vector<int64_t>{20, 100}));
}

TEST(CheckpointFolders, LatestIsTheNewestCompleteOneAndNoneWhenThereIsNone) {
  const auto dir = test::scratch_dir("ckpt_latest");
  EXPECT_FALSE(resolve_resume_checkpoint("latest", dir).has_value());
  EXPECT_FALSE(resolve_resume_checkpoint("", dir).has_value());
  make_checkpoint(dir, 5);
  make_checkpoint(dir, 10);
  make_checkpoint(dir, 15, false);
  const auto latest = resolve_resume_checkpoint("latest", dir);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 10);
}

TEST(CheckpointFolders, AWrongExplicitPathIsAnErrorNotAFreshStart) {
  const auto dir = test::scratch_dir("ckpt_wrong");
  make_checkpoint(dir, 7, false);
  for (const fs::path& p : {dir / "checkpoint-8", dir / "checkpoint-7"}) {
    try {
      resolve_resume_checkpoint(p.string(), dir);
      FAIL() << p;
    } catch (const ConfigError& e) {
      EXPECT_NE(e.message().find("resume_from_checkpoint"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find(p.string()), std::string::npos) << e.message();
    }
  }
  make_checkpoint(dir, 9);
  EXPECT_EQ(resolve_resume_checkpoint((dir / "checkpoint-9").string(), dir)->step, 9);
}

TEST(CheckpointFolders, RotationKeepsTheNewestAndTheResumedFromAndRemovesPartials) {
  const auto dir = test::scratch_dir("ckpt_rotate");
  for (int64_t s : {1, 2, 3, 4, 5}) make_checkpoint(dir, s);
  fs::create_directories(dir / "checkpoint-6.partial");
  rotate_checkpoints(dir, 2, dir / "checkpoint-1");  // the resumed-from one counts towards the limit
  EXPECT_EQ(steps(dir), (std::vector<int64_t>{1, 5}));
  EXPECT_FALSE(fs::exists(dir / "checkpoint-6.partial"));
  rotate_checkpoints(dir, 0, std::nullopt);  // 0 keeps everything
  EXPECT_EQ(steps(dir), (std::vector<int64_t>{1, 5}));
  rotate_checkpoints(dir, 1, std::nullopt);
  EXPECT_EQ(steps(dir), (std::vector<int64_t>{5}));
}
