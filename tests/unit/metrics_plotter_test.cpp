// loss.png from tools/plot_metrics, run in the background by MetricsPlotter: a request while a plot
// runs is drawn once it ends, and a plot that cannot run never throws.
#include "cvx/train/metrics_plotter.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "test_util.h"

using namespace cvx;
namespace fs = std::filesystem;

namespace {
bool have_matplotlib() { return test::run_command(std::string(CVX_PYTHON3) + " -c 'import matplotlib'") == 0; }

void write_metrics(const fs::path& dir, int num_steps) {
  std::ofstream out(dir / "metrics.jsonl", std::ios::trunc);
  for (int s = 1; s <= num_steps; ++s)
    out << "{\"step\": " << s << ", \"loss\": " << 1.0 / s << ", \"lr\": 1e-4, \"grad_norm\": 0.5, "
        << "\"samples_per_second\": 2.0}\n";
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST(MetricsPlotter, RequestWhileAPlotRunsIsDrawnBeforeThePlotterEnds) {
  if (!have_matplotlib()) GTEST_SKIP() << CVX_PYTHON3 << " has no matplotlib (apt install python3-matplotlib)";
  const auto dir = test::scratch_dir("plotter");
  write_metrics(dir, 2);
  {
    MetricsPlotter plotter(dir);
    plotter.request();
    EXPECT_TRUE(plotter.busy()) << "the plot runs in a child process (python3 takes far longer than this)";
    write_metrics(dir, 3);
    plotter.request();
  }
  std::ifstream png(dir / "loss.png", std::ios::binary);
  std::string magic(8, '\0');
  png.read(magic.data(), 8);
  EXPECT_EQ(magic, std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_NE(read_text(dir / "plot_metrics.log").find("(3 steps)"), std::string::npos)
      << read_text(dir / "plot_metrics.log");
}

TEST(MetricsPlotter, MissingInterpreterDoesNotThrowAndDrawsNothing) {
  const auto dir = test::scratch_dir("plotter_no_python");
  write_metrics(dir, 2);
  setenv("CVX_PYTHON", (dir / "no-such-python3").c_str(), 1);
  {
    MetricsPlotter plotter(dir);
    EXPECT_NO_THROW(plotter.request());
    EXPECT_FALSE(plotter.busy());
    EXPECT_NO_THROW(plotter.request());
  }
  unsetenv("CVX_PYTHON");
  EXPECT_FALSE(fs::exists(dir / "loss.png"));
}

TEST(PlotMetrics, MissingOrEmptyMetricsFailWithExitTwoNamingTheFile) {
  const auto dir = test::scratch_dir("plot_metrics_empty");
  const std::string command = std::string(CVX_PYTHON3) + " " +
                              test::shell_quote(fs::path(CVX_SOURCE_DIR) / "tools" / "plot_metrics") + " " +
                              test::shell_quote(dir);
  std::string output;
  EXPECT_EQ(test::run_command(command, &output), 2) << output;
  EXPECT_NE(output.find((dir / "metrics.jsonl").string()), std::string::npos) << output;
  std::ofstream(dir / "metrics.jsonl") << "\n";
  EXPECT_EQ(test::run_command(command, &output), 2) << output;
  EXPECT_NE(output.find("no step yet"), std::string::npos) << output;
}
