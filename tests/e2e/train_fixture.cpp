#include "train_fixture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>

#include "test_util.h"

namespace cvx::test {
namespace fs = std::filesystem;

std::string mpirun(int np) { return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(np) + " "; }

namespace {

std::string base_config(const Fixture& f) {
  std::ostringstream ini;
  ini << "log_level = info\n\n[model]\npath = " << f.model.string()
      << "\ndtype = fp32\n\n[data]\ndata_root = " << f.data.string()
      << "\ncaption_column = prompts.txt\nvideo_column = videos.txt\n"
      << (f.i2v ? "image_column = images.txt\n" : "") << "train_resolution = 9x48x64\nstore = " << f.store.string()
      << "\n\n[precompute]\nlatent_dtype = fp32\nembedding_dtype = fp32\n\n[train]\nmixed_precision = no\n"
      << "learning_rate = 1e-3\nlr_scheduler = constant\nlr_warmup_steps = 0\ncheckpointing_steps = 1000\n"
      // No loss plot (a python3 process per checkpoint) except where a test asks for it.
      << "plot_metrics = false\n"
      << "\n[lora]\nrank = 4\nalpha = 4\n";
  return ini.str();
}

}  // namespace

const Fixture& fixture(const std::string& variant, int num_samples) {
  static std::mutex mutex;
  static std::map<std::string, Fixture> made;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = variant + "/" + std::to_string(num_samples);
  if (auto it = made.find(key); it != made.end()) return it->second;
  Fixture f;
  f.variant = variant;
  f.i2v = variant.find("i2v") != std::string::npos;
  f.dir = cvx::test::scratch_dir("train_e2e_" + std::regex_replace(variant, std::regex("\\."), "_"));
  f.model = f.dir / "model";
  f.data = f.dir / "data";
  f.store = f.dir / "store.h5";
  f.config = f.dir / "base.ini";
  std::string out;
  EXPECT_EQ(
      run_command(shell_quote(built_program("cvx_make_tiny")) + " " + shell_quote(f.model) + " --variant " + variant,
                  &out),
      0)
      << out;
  const fs::path script = fs::path(CVX_SOURCE_DIR) / "tools" / "make_synthetic_dataset.sh";
  EXPECT_EQ(run_command(shell_quote(script) + " " + shell_quote(f.data) + " " + std::to_string(num_samples) +
                            " 64x48 12" + (f.i2v ? " --images" : ""),
                        &out),
            0)
      << out;
  std::ofstream(f.config) << base_config(f);
  EXPECT_EQ(run_command(mpirun(2) + shell_quote(built_program("cvx_precompute")) + " --config " + shell_quote(f.config),
                        &out),
            0)
      << out;
  return made.emplace(key, f).first->second;
}

std::vector<double> TrainRun::losses() const {
  std::vector<double> out;
  for (const auto& m : metrics) out.push_back(m["loss"].get<double>());
  return out;
}

TrainRun train(const Fixture& f, int np, const fs::path& output_dir, const std::string& args) {
  TrainRun r;
  r.dir = output_dir;
  r.rc = run_command(mpirun(np) + shell_quote(built_program("cvx_train")) + " --config " + shell_quote(f.config) +
                         " --train.output_dir " + shell_quote(output_dir) + " " + args,
                     &r.output);
  std::ifstream in(output_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) r.metrics.push_back(nlohmann::json::parse(line));
  return r;
}

void expect_same_losses(const TrainRun& a, const TrainRun& b, const std::string& what) {
  ASSERT_EQ(a.metrics.size(), b.metrics.size()) << what;
  for (size_t s = 0; s < a.metrics.size(); ++s) {
    const double x = a.metrics[s]["loss"].get<double>(), y = b.metrics[s]["loss"].get<double>();
    EXPECT_NEAR(y, x, 1e-4 * std::abs(x)) << what << " step " << s + 1;
  }
}

}  // namespace cvx::test
