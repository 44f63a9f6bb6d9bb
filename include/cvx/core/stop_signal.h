// A graceful stop on SIGUSR1 or SIGTERM: the handler only records the signal (async-signal-safe);
// the training loop polls it between steps, every rank finishes its step, a checkpoint is saved
// and the program exits with a status that says "checkpointed, requeue me". Slurm sends SIGUSR1
// ahead of the time limit (`#SBATCH --signal=B:USR1@300`, forwarded by the batch script) and
// SIGTERM at the limit or on scancel.
#pragma once
#include <cstdint>
#include <string>

namespace cvx {

// Installs the SIGUSR1 and SIGTERM handlers (SA_RESTART, so system calls in flight carry on).
void install_stop_signal_handlers();

// The first stop signal received (SIGUSR1 or SIGTERM), 0 while none arrived.
int first_stop_signal();
// Every stop signal received so far, and the most recent one.
int stop_signals_received();
int last_stop_signal();

// "SIGUSR1", "SIGTERM", else "signal N".
std::string stop_signal_name(int signal);

// Polled by the training loop; logs from there, never from the handler.
class StopSignalWatch {
 public:
  // True once a stop signal arrived; the first time logs "stop requested by SIGUSR1: finishing
  // step N, then checkpoint".
  bool requested(int64_t step);
  // Logs the signals that arrived after the first one (they change nothing: the stop is already
  // under way and the checkpoint is staged and renamed into place, so it is never torn).
  void report_ignored();

 private:
  bool reported_first_ = false;
  int reported_count_ = 0;
};

}  // namespace cvx
