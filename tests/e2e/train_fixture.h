// What the cvx_train end-to-end tests share: a tiny model, a synthetic dataset and its store per
// variant (made once per test binary), and a run of cvx_train under mpirun.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cvx::test {

// "mpirun --allow-run-as-root --oversubscribe -np N "
std::string mpirun(int np);

struct Fixture {
  std::filesystem::path dir, model, data, store, config;  // config: the base INI of every run
  std::string variant;
  bool i2v = false;
};

// Made on first use (cvx_make_tiny, tools/make_synthetic_dataset.sh, cvx_precompute on 2 ranks).
const Fixture& fixture(const std::string& variant, int num_samples = 4);

struct TrainRun {
  int rc = -1;
  std::string output;
  std::filesystem::path dir;
  std::vector<nlohmann::json> metrics;  // metrics.jsonl, one object per step
  std::vector<double> losses() const;
};

// cvx_train --config f.config --train.output_dir output_dir ARGS on np ranks.
TrainRun train(const Fixture& f, int np, const std::filesystem::path& output_dir, const std::string& args);

// The per-step losses of two runs of the same samples and draws that sum in another fp32 order
// (data-parallel, sequence-parallel or hybrid worlds): ~1e-7 relative per step, amplified by
// AdamW's normalisation on later steps; 1e-4 relative bounds it with margin. `what` names the pair.
void expect_same_losses(const TrainRun& a, const TrainRun& b, const std::string& what);

}  // namespace cvx::test
