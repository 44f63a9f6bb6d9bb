// What rank 0 reports after every optimizer step: one fixed-field line in the log and the same
// fields as one JSON object per line in output_dir/metrics.jsonl (the input of plots and of the
// tests that compare loss curves).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace cvx {

struct StepReport {
  int64_t step = 0;  // optimizer steps done (1-based after the first)
  int64_t total_steps = 0;
  int64_t epoch = 0;
  double loss = 0;          // mean over the global batch
  double grad_norm = 0;     // before clipping
  double lr = 0;            // used by this step
  double step_seconds = 0;  // wall time of the step, data wait included
  double data_wait_seconds = 0;
  uint64_t peak_memory_bytes = 0;
  std::string memory_kind = "host RSS";  // or "CUDA max allocated"
  int64_t samples = 0;                   // global batch of the step
  double samples_per_second = 0, tokens_per_second = 0;
  double tflops = 0;  // executed TFLOP/s per rank (step_flops.h)
  double mfu = -1;    // tflops / peak; negative = unknown peak
  double eta_seconds = 0;
  uint64_t sequence_bytes = 0;  // sent over the sequence-parallel group in the step (all-to-all + head gathers)
};

// "step 12/400 | epoch 1 | loss 0.1234 | grad_norm 0.98 | lr 2.00e-05 | 3.21 s/step | data 0.01 s |
//  mem 1.2 GiB | 0.62 samples/s | 11.0k tokens/s | 2.1 TFLOP/s | MFU 0.2% | ETA 20m31s"
std::string format_step_line(const StepReport& report);
nlohmann::json step_json(const StepReport& report);
// The console's updating line on an interactive terminal:
// "step 12/400 (3.0%) | loss 0.1234 | 3.21 s/step | ETA 20m31s"
std::string format_progress_line(const StepReport& report);
// Rank 0's report of a step in the log: where a person watches the console (console_is_interactive)
// the fixed-field line goes to the log files only and the console shows format_progress_line in
// place; elsewhere (mpirun, Slurm, pipes) the fixed-field line goes everywhere, once per step.
void log_step(const StepReport& report);
// "1h02m03s", "20m31s", "12s".
std::string format_duration(double seconds);

// output_dir/metrics.jsonl. Opening for a run that resumed at step k drops the lines of steps > k
// (written by the interrupted run after its last checkpoint), so the file is the run's one curve.
class MetricsLog {
 public:
  MetricsLog(const std::filesystem::path& file, int64_t resumed_step);
  void write(const StepReport& report);  // one line, flushed

 private:
  std::ofstream out_;
};

}  // namespace cvx
