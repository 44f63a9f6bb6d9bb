// Rank 0 redraws output_dir/loss.png (tools/plot_metrics over metrics.jsonl) after each checkpoint,
// in a child process so the training never waits for matplotlib: at most one plot runs at a time, a
// request while one runs is done once it ends, and a plot that cannot run (no python3, no
// matplotlib, no script) logs one warning and turns plotting off, never failing the training.
#pragma once
#include <sys/types.h>

#include <filesystem>
#include <string>

namespace cvx {

class MetricsPlotter {
 public:
  // The script: $CVX_PLOT_METRICS, else tools/plot_metrics of the source tree (CVX_SOURCE_DIR); the
  // interpreter: $CVX_PYTHON, else the python3 found at configure time (CVX_PYTHON3). The child's
  // output goes to output_dir/plot_metrics.log.
  explicit MetricsPlotter(std::filesystem::path output_dir);
  // Waits for a running plot and draws a requested one, so loss.png shows the last checkpoint.
  ~MetricsPlotter();
  MetricsPlotter(const MetricsPlotter&) = delete;
  MetricsPlotter& operator=(const MetricsPlotter&) = delete;

  // Starts a plot now, or marks one to start when the running one ends. Never throws.
  void request();
  // True while a plot runs (reaps a finished one).
  bool busy();

 private:
  void start();
  void reap(bool wait);

  std::filesystem::path output_dir_, script_;
  std::string python_;
  pid_t child_ = -1;
  bool pending_ = false, disabled_ = false;
};

}  // namespace cvx
