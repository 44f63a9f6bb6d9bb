// The user-facing programs, run as users run them.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/app/general_config.h"
#include "cvx/core/options.h"
#include "cvx/io/safetensors.h"
#include "cvx/train/trainer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::built_program;
using cvx::test::run_command;

TEST(Programs, TrainHelpListsEveryOptionWithItsDefault) {
  std::string out;
  ASSERT_EQ(run_command(cvx::test::shell_quote(built_program("cvx_train")) + " --help", &out), 0) << out;
  cvx::GeneralConfig general;
  cvx::TrainRunConfig run;
  cvx::Options reference("cvx_train", "");
  reference.add("", general).add("model", run.model).add("data", run.data).add("train", run.train);
  reference.add("lora", run.lora).add("parallel", run.parallel).add("validation", run.validation);
  for (const auto& o : reference.options()) {
    const std::string shown_default = o.default_value.empty() ? "\"\"" : o.default_value;
    EXPECT_NE(out.find("--" + o.full_name() + " <" + o.type + ">  (default: " + shown_default + ")"), std::string::npos)
        << o.full_name() << " missing from --help";
  }
}

TEST(Programs, TrainRefusesUnknownIniKeyWithSuggestion) {
  const fs::path dir = cvx::test::scratch_dir("programs_bad_ini");
  const fs::path ini = dir / "bad.ini";
  std::ofstream(ini) << "[model]\npath = /nowhere\n[train]\nlearning_rat = 1e-4\n";
  std::string out;
  EXPECT_NE(run_command(cvx::test::shell_quote(built_program("cvx_train")) + " --config " + cvx::test::shell_quote(ini),
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("unknown key 'learning_rat' in section [train]"), std::string::npos) << out;
  EXPECT_NE(out.find(ini.string() + ":4"), std::string::npos) << out;
  EXPECT_NE(out.find("did you mean 'train.learning_rate'?"), std::string::npos) << out;
}

TEST(Programs, TrainDryRunWritesResolvedConfigIntoRunFolder) {
  const fs::path dir = cvx::test::scratch_dir("programs_dry_run");
  std::string out;
  const std::string command = cvx::test::shell_quote(built_program("cvx_train")) + " --model.path " +
                              cvx::test::shell_quote(dir / "model") + " --train.output_dir " +
                              cvx::test::shell_quote(dir / "run") + " --dry_run --lora.rank 16";
  ASSERT_EQ(run_command(command, &out), 0) << out;
  ASSERT_TRUE(fs::exists(dir / "run" / "config.ini")) << out;
  ASSERT_TRUE(fs::exists(dir / "run" / "log.txt")) << out;
  std::ifstream in(dir / "run" / "config.ini");
  const std::string ini((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(ini.find("[lora]\nrank = 16\n"), std::string::npos) << ini;
  // The saved file reproduces the run.
  std::string again;
  EXPECT_EQ(run_command(cvx::test::shell_quote(built_program("cvx_train")) + " --config " +
                            cvx::test::shell_quote(dir / "run" / "config.ini"),
                        &again),
            0)
      << again;
}

TEST(Programs, PrecomputeRefusesCountMismatchNamingBothFiles) {
  const fs::path root = cvx::test::scratch_dir("programs_mismatch");
  fs::create_directories(root / "videos");
  std::ofstream(root / "prompts.txt") << "a cat\na dog\na bird\n";
  std::ofstream(root / "videos.txt") << "videos/a.mp4\nvideos/b.mp4\n";
  std::ofstream(root / "videos" / "a.mp4") << "x";
  std::ofstream(root / "videos" / "b.mp4") << "x";
  std::string out;
  const std::string command = cvx::test::shell_quote(built_program("cvx_precompute")) +
                              " --model.path /nowhere --data.data_root " + cvx::test::shell_quote(root) +
                              " --data.store " + cvx::test::shell_quote(root / "store.h5") + " --dry_run";
  EXPECT_NE(run_command(command, &out), 0) << out;
  EXPECT_NE(out.find((root / "prompts.txt").string()), std::string::npos) << out;
  EXPECT_NE(out.find((root / "videos.txt").string()), std::string::npos) << out;
  EXPECT_NE(out.find("has 3 entries"), std::string::npos) << out;
  EXPECT_NE(out.find("has 2"), std::string::npos) << out;
}

// cvx_inspect on every model component folder of the golden set lists every tensor; a truncated or
// header-corrupted copy of a weights file fails with one line naming the file.
TEST(Programs, InspectGoldenTransformersAndCorruptCopies) {
  const auto golden = cvx::test::golden_dir();
  if (!golden) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)";
  size_t checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(*golden)) {
    if (entry.path().filename() != "diffusion_pytorch_model.safetensors") continue;
    const fs::path folder = entry.path().parent_path();
    std::string out;
    ASSERT_EQ(
        run_command(cvx::test::shell_quote(built_program("cvx_inspect")) + " " + cvx::test::shell_quote(folder), &out),
        0)
        << out;
    const auto source = cvx::open_tensor_source(entry.path());
    for (const auto& name : source->names()) {
      EXPECT_NE(out.find(name + " "), std::string::npos) << name << " not listed for " << folder;
    }
    // Corrupt copies.
    const fs::path scratch = cvx::test::scratch_dir("inspect_corrupt");
    const auto size = fs::file_size(entry.path());
    const fs::path truncated = scratch / "truncated.safetensors";
    fs::copy_file(entry.path(), truncated);
    fs::resize_file(truncated, size / 2);
    const fs::path corrupted = scratch / "corrupted.safetensors";
    fs::copy_file(entry.path(), corrupted);
    {
      std::fstream f(corrupted, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(8 + 2);
      f.write("\x01\xff", 2);  // inside the JSON header
    }
    for (const fs::path& bad : {truncated, corrupted}) {
      std::string err;
      // stderr only: the error must be one line there.
      const int rc = run_command("{ " + cvx::test::shell_quote(built_program("cvx_inspect")) + " " +
                                     cvx::test::shell_quote(bad) + " 2>&1 >/dev/null; }",
                                 &err);
      EXPECT_EQ(rc, 1) << err;
      EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "expected one line, got: " << err;
      EXPECT_NE(err.find(bad.string()), std::string::npos) << err;
    }
    if (++checked >= 3) break;  // a few folders suffice for the corrupt-copy part
  }
  EXPECT_GT(checked, 0u);
}
