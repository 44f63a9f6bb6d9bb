// Every INI file shipped in configs/ is a valid cvx_train configuration: `cvx_train --config FILE
// --dry_run` accepts it and prints the memory plan, without any weights or data. The files are
// found by listing the folder, so a config added later is checked without touching this test.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> shipped_configs() {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(fs::path(CVX_SOURCE_DIR) / "configs"))
    if (entry.is_regular_file() && entry.path().extension() == ".ini") out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The value of `key` in `[section]` of an INI file ("" when absent), comments stripped.
std::string ini_value(const fs::path& file, const std::string& section, const std::string& key) {
  std::ifstream in(file);
  std::string line, current;
  const auto trim = [](std::string s) {
    s = s.substr(0, s.find('#'));
    const auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) return std::string();
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
  };
  while (std::getline(in, line)) {
    const std::string t = trim(line);
    if (t.size() > 1 && t.front() == '[' && t.back() == ']') {
      current = t.substr(1, t.size() - 2);
    } else if (current == section && t.find('=') != std::string::npos && trim(t.substr(0, t.find('='))) == key) {
      return trim(t.substr(t.find('=') + 1));
    }
  }
  return "";
}

// A model folder for configs whose [model] variant is auto (read from the folder, so the plan needs
// one): the tiny random model of cvx_make_tiny, made once.
const fs::path& tiny_model() {
  static const fs::path dir = [] {
    const fs::path d = cvx::test::scratch_dir("configs_dry_run_model") / "model";
    std::string out;
    const int rc = cvx::test::run_command(cvx::test::shell_quote(cvx::test::built_program("cvx_make_tiny")) + " " +
                                              cvx::test::shell_quote(d) + " --variant 5b",
                                          &out);
    EXPECT_EQ(rc, 0) << out;
    return d;
  }();
  return dir;
}

class ShippedConfig : public testing::TestWithParam<fs::path> {};

}  // namespace

TEST(ShippedConfigs, FolderHoldsConfigs) { EXPECT_FALSE(shipped_configs().empty()); }

TEST_P(ShippedConfig, DryRunAcceptsItAndPrintsTheMemoryPlan) {
  const fs::path config = GetParam();
  const fs::path run = cvx::test::scratch_dir("configs_dry_run") / "run";
  std::string command = cvx::test::shell_quote(cvx::test::built_program("cvx_train")) + " --config " +
                        cvx::test::shell_quote(config) + " --dry_run --train.output_dir " +
                        cvx::test::shell_quote(run) + " --parallel.simulate_world_size 8";
  // Only a model folder can tell an "auto" variant; the released configs name theirs and need none.
  if (ini_value(config, "model", "variant") == "auto" || ini_value(config, "model", "variant").empty())
    command += " --model.path " + cvx::test::shell_quote(tiny_model());
  std::string out;
  ASSERT_EQ(cvx::test::run_command(command, &out), 0) << command << "\n" << out;
  EXPECT_NE(out.find("memory per rank:"), std::string::npos) << out;
  EXPECT_NE(out.find("dry run: configuration checked, nothing trained"), std::string::npos) << out;
  EXPECT_EQ(out.find("no memory plan"), std::string::npos) << out;
  // The file name says what the file trains.
  const std::string name = config.filename().string();
  if (name.find("_lora_") != std::string::npos) EXPECT_NE(out.find("plan: lora fine-tuning"), std::string::npos) << out;
  if (name.find("_sft_") != std::string::npos) EXPECT_NE(out.find("plan: sft fine-tuning"), std::string::npos) << out;
  const std::string variant = ini_value(config, "model", "variant");
  if (name.find("_i2v") != std::string::npos) EXPECT_NE(variant.find("i2v"), std::string::npos) << variant;
  if (name.find("_t2v") != std::string::npos) EXPECT_EQ(variant.find("i2v"), std::string::npos) << variant;
}

INSTANTIATE_TEST_SUITE_P(Configs, ShippedConfig, testing::ValuesIn(shipped_configs()),
                         [](const testing::TestParamInfo<fs::path>& info) {
                           std::string name = info.param.stem().string();
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });
