// Learning-rate schedules over optimizer steps, the curves of diffusers' get_scheduler
// (diffusers/optimization.py, v0.32.2: LambdaLR multipliers of the peak learning rate):
//   constant                  1
//   constant_with_warmup      s < W ? s / max(1, W) : 1
//   linear                    s < W ? s / max(1, W) : max(0, (N - s) / max(1, N - W))
//   cosine                    s < W ? ... : max(0, 0.5 (1 + cos(pi * 2 cycles * p)))    p = (s - W) / max(1, N - W),
//   cycles = 0.5 cosine_with_restarts      s < W ? ... : p >= 1 ? 0 : max(0, 0.5 (1 + cos(pi * ((cycles * p) % 1))))
//   polynomial                s < W ? ... : s > N ? end / lr : ((lr - end) (1 - (s - W) / (N - W))^power + end) / lr,
//   end = 1e-7
// where s is the number of optimizer steps taken so far (the learning rate of step s + 1, as LambdaLR
// gives lr * lambda(s) after s scheduler.step() calls; the first step uses lambda(0), 0 with warm-up)
// and N the total. Past N the formulas run on as in diffusers (linear 0, polynomial end / lr). Where
// diffusers fails at run time this refuses the config up front (polynomial with learning_rate <= end,
// or power < 0); where it divides 0 by 0 (polynomial, N == W, s == N) this gives end / lr.
// The state is the step alone, so a resumed run continues the same curve.
#pragma once
#include <cstdint>
#include <string>

namespace cvx {

struct LrScheduleConfig {
  std::string name = "constant_with_warmup";  // one of the six above; anything else: ConfigError
  double learning_rate = 2e-5;                // peak
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // N (the run's optimizer steps)
  int64_t num_cycles = 1;   // cosine_with_restarts (cosine uses 0.5, as get_scheduler passes no cycles)
  double power = 1.0;       // polynomial
};

class LrSchedule {
 public:
  explicit LrSchedule(LrScheduleConfig config);  // validates (ConfigError naming the option)
  // The learning rate of the optimizer step that follows `steps_done` completed steps.
  double lr(int64_t steps_done) const;
  // lr(s) / learning_rate.
  double multiplier(int64_t steps_done) const;
  const LrScheduleConfig& config() const { return config_; }

 private:
  LrScheduleConfig config_;
};

}  // namespace cvx
