#include "cvx/core/stop_signal.h"

#include <atomic>
#include <csignal>
#include <cstring>

#include "cvx/core/error.h"
#include "cvx/core/log.h"

namespace cvx {
namespace {
// Written only by the handler; sig_atomic_t is what a handler may store to. The count is a lock-free
// atomic (checked below), which handlers may also use.
volatile std::sig_atomic_t g_first = 0;
volatile std::sig_atomic_t g_last = 0;
std::atomic<int> g_count{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

extern "C" void on_stop_signal(int signal) {
  if (g_first == 0) g_first = signal;
  g_last = signal;
  g_count.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signal : {SIGUSR1, SIGTERM})
    CVX_CHECK_AS(SystemError, sigaction(signal, &action, nullptr) == 0, "cannot install the ", stop_signal_name(signal),
                 " handler: ", std::strerror(errno));
}

int first_stop_signal() { return g_first; }
int last_stop_signal() { return g_last; }
int stop_signals_received() { return g_count.load(std::memory_order_relaxed); }

std::string stop_signal_name(int signal) {
  if (signal == SIGUSR1) return "SIGUSR1";
  if (signal == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(signal);
}

bool StopSignalWatch::requested(int64_t step) {
  const int first = first_stop_signal();
  if (first == 0) return false;
  if (!reported_first_) {
    reported_first_ = true;
    reported_count_ = 1;
    CVX_WARN << "stop requested by " << stop_signal_name(first) << ": finishing step " << step << ", then checkpoint";
  }
  return true;
}

void StopSignalWatch::report_ignored() {
  const int count = stop_signals_received();
  if (!reported_first_ || count <= reported_count_) return;
  CVX_WARN << count - reported_count_ << " more stop signal(s) (last " << stop_signal_name(last_stop_signal())
           << ") while stopping: ignored, the checkpoint is saved whole";
  reported_count_ = count;
}

}  // namespace cvx
