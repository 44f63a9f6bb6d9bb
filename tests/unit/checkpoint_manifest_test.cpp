// The file manifest of a checkpoint: resume verifies it, names a damaged file, `latest` refuses a
// damaged newest checkpoint, `latest_valid` falls back to the newest one that verifies, and
// checkpoints without a manifest (older cvx) still resume.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cvx/core/error.h"
#include "cvx/train/checkpoint_folders.h"
#include "cvx/train/checkpoint_manifest.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace cvx;

namespace {
// A complete checkpoint with two files and a manifest (or none: the previous format).
fs::path make_checkpoint(const fs::path& dir, int64_t step, bool with_manifest = true) {
  const fs::path c = dir / checkpoint_folder_name(step);
  fs::create_directories(c / "state");
  std::ofstream(c / "state" / "shard-00000-of-00001.safetensors") << "shard bytes of step " << step;
  std::ofstream(c / "config.ini") << "[train]\n";
  nlohmann::json state{{"step", step}};
  if (with_manifest) state["files"] = checkpoint_manifest(c);
  std::ofstream(c / kTrainerStateFile) << state.dump();
  return c;
}
nlohmann::json state_of(const fs::path& c) { return nlohmann::json::parse(std::ifstream(c / kTrainerStateFile)); }
}  // namespace

TEST(CheckpointManifest, RecordsEveryFileButTrainerStateWithSizeAndChecksumAndVerifies) {
  const auto dir = test::scratch_dir("manifest_ok");
  const fs::path c = make_checkpoint(dir, 4);
  const auto files = state_of(c)["files"];
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0]["path"], "config.ini");
  EXPECT_EQ(files[1]["path"], "state/shard-00000-of-00001.safetensors");
  EXPECT_EQ(files[1]["size"].get<uint64_t>(), fs::file_size(c / "state" / "shard-00000-of-00001.safetensors"));
  EXPECT_TRUE(verify_checkpoint_files(c, state_of(c)));
  EXPECT_EQ(resolve_resume_checkpoint("latest", dir)->step, 4);
}

TEST(CheckpointManifest, ATruncatedChangedOrMissingFileIsRefusedByNameWithTheFallback) {
  const auto dir = test::scratch_dir("manifest_bad");
  const fs::path c = make_checkpoint(dir, 4);
  const fs::path shard = c / "state" / "shard-00000-of-00001.safetensors";
  const auto original = fs::file_size(shard);
  fs::resize_file(shard, original - 3);
  std::string message = test::error_text([&] { verify_checkpoint_files(c, state_of(c)); });
  EXPECT_NE(message.find(shard.string()), std::string::npos) << message;
  EXPECT_NE(message.find("latest_valid"), std::string::npos) << message;
  EXPECT_NE(message.find("bytes"), std::string::npos) << message;

  std::ofstream(shard) << "shard bytes of step 5";  // same size, other content
  ASSERT_EQ(fs::file_size(shard), original);
  message = test::error_text([&] { verify_checkpoint_files(c, state_of(c)); });
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
  EXPECT_NE(message.find(shard.string()), std::string::npos) << message;

  fs::remove(shard);
  message = test::error_text([&] { verify_checkpoint_files(c, state_of(c)); });
  EXPECT_NE(message.find("missing"), std::string::npos) << message;
  EXPECT_THROW(verify_checkpoint_files(c, state_of(c)), FormatError);
}

TEST(CheckpointManifest, LatestRefusesADamagedNewestCheckpointAndLatestValidFallsBack) {
  const auto dir = test::scratch_dir("manifest_latest");
  make_checkpoint(dir, 2);
  const fs::path newest = make_checkpoint(dir, 4);
  std::ofstream(newest / "config.ini", std::ios::app) << "x";
  const std::string message = test::error_text([&] { resolve_resume_checkpoint("latest", dir); });
  EXPECT_NE(message.find((newest / "config.ini").string()), std::string::npos) << message;
  EXPECT_THROW(resolve_resume_checkpoint("latest", dir), FormatError) << "latest never falls back silently";
  EXPECT_THROW(resolve_resume_checkpoint(newest.string(), dir), FormatError);
  const auto valid = resolve_resume_checkpoint("latest_valid", dir);
  ASSERT_TRUE(valid.has_value());
  EXPECT_EQ(valid->step, 2);
}

TEST(CheckpointManifest, LatestValidWithNoCheckpointStartsFreshAndWithOnlyDamagedOnesIsAnError) {
  const auto dir = test::scratch_dir("manifest_none");
  EXPECT_FALSE(resolve_resume_checkpoint("latest_valid", dir).has_value());
  const fs::path only = make_checkpoint(dir, 3);
  fs::remove(only / "config.ini");
  const std::string message = test::error_text([&] { resolve_resume_checkpoint("latest_valid", dir); });
  EXPECT_NE(message.find("none of the 1 checkpoints"), std::string::npos) << message;
  EXPECT_THROW(resolve_resume_checkpoint("latest_valid", dir), ConfigError);
}

TEST(CheckpointManifest, ACheckpointWithoutManifestFromAnOlderCvxStillResumes) {
  const auto dir = test::scratch_dir("manifest_old");
  const fs::path c = make_checkpoint(dir, 6, /*with_manifest=*/false);
  EXPECT_FALSE(verify_checkpoint_files(c, state_of(c)));
  EXPECT_EQ(resolve_resume_checkpoint("latest", dir)->step, 6);
  EXPECT_EQ(resolve_resume_checkpoint("latest_valid", dir)->step, 6);
}
