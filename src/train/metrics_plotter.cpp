#include "cvx/train/metrics_plotter.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "cvx/core/log.h"

extern char** environ;

namespace cvx {
namespace fs = std::filesystem;

namespace {
std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}
}  // namespace

MetricsPlotter::MetricsPlotter(fs::path output_dir)
    : output_dir_(std::move(output_dir)),
      script_(env_or("CVX_PLOT_METRICS", (fs::path(CVX_SOURCE_DIR) / "tools" / "plot_metrics").string())),
      python_(env_or("CVX_PYTHON", CVX_PYTHON3)) {}

MetricsPlotter::~MetricsPlotter() {
  reap(/*wait=*/true);
  if (pending_ && !disabled_) {
    start();
    reap(/*wait=*/true);
  }
}

bool MetricsPlotter::busy() {
  reap(/*wait=*/false);
  return child_ > 0;
}

void MetricsPlotter::request() {
  if (disabled_) return;
  if (busy()) {
    pending_ = true;
    return;
  }
  start();
}

void MetricsPlotter::start() {
  pending_ = false;
  if (!fs::exists(script_)) {
    CVX_WARN << "no loss plots: the plot script " << script_.string()
             << " does not exist (set CVX_PLOT_METRICS to tools/plot_metrics, or [train] plot_metrics = false)";
    disabled_ = true;
    return;
  }
  const std::string log_file = (output_dir_ / "plot_metrics.log").string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<std::string> args{python_, script_.string(), output_dir_.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  // posix_spawnp, not fork: no copy of a large training process, and safe beside MPI's registered memory.
  const int rc = posix_spawnp(&pid, python_.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    CVX_WARN << "no loss plots: cannot run " << python_ << " (" << std::strerror(rc)
             << "; apt install python3 python3-matplotlib, set CVX_PYTHON, or [train] plot_metrics = false)";
    disabled_ = true;
    return;
  }
  child_ = pid;
}

void MetricsPlotter::reap(bool wait) {
  if (child_ <= 0) return;
  int status = 0;
  pid_t done = -1;
  do {
    done = waitpid(child_, &status, wait ? 0 : WNOHANG);
  } while (done < 0 && errno == EINTR);
  if (done == 0) return;  // still running
  child_ = -1;
  if (done < 0) return;  // reaped elsewhere: nothing to report
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  // One warning, then no more tries: what failed once (no interpreter, no matplotlib) fails again.
  const fs::path log_file = output_dir_ / "plot_metrics.log";
  std::string last_line, line;
  std::ifstream in(log_file);
  while (std::getline(in, line))
    if (!line.empty()) last_line = line;
  CVX_WARN << "no loss plots: " << python_ << " " << script_.string() << " failed ("
           << (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : std::string("killed by a signal"))
           << (last_line.empty() ? std::string() : ": " + last_line) << "; see " << log_file.string()
           << "). Training goes on without plots.";
  disabled_ = true;
  pending_ = false;
}

}  // namespace cvx
