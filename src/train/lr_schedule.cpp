#include "cvx/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cvx/core/error.h"

namespace cvx {

namespace {

// diffusers' get_polynomial_decay_schedule_with_warmup default; get_scheduler passes no other.
constexpr double kPolynomialLrEnd = 1e-7;

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names{"constant", "constant_with_warmup", "linear",
                                              "cosine",   "cosine_with_restarts", "polynomial"};
  return names;
}

std::string joined_names() {
  std::string out;
  for (const auto& n : schedule_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

LrSchedule::LrSchedule(LrScheduleConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  const auto& names = schedule_names();
  CVX_CHECK_AS(ConfigError, std::find(names.begin(), names.end(), c.name) != names.end(),
               "train.lr_scheduler: unknown schedule '", c.name, "'; expected one of: ", joined_names());
  CVX_CHECK_AS(ConfigError, std::isfinite(c.learning_rate) && c.learning_rate > 0,
               "train.learning_rate must be a finite number > 0 (got ", c.learning_rate, ")");
  CVX_CHECK_AS(ConfigError, c.warmup_steps >= 0, "train.lr_warmup_steps must be >= 0 (got ", c.warmup_steps,
               "); use 0 for no warm-up");
  CVX_CHECK_AS(ConfigError, c.total_steps > 0, "the schedule's total steps must be > 0 (got ", c.total_steps,
               "); set train.train_steps > 0, or train.train_epochs > 0 with a non-empty dataset");
  CVX_CHECK_AS(ConfigError, c.num_cycles > 0, "train.lr_num_cycles must be > 0 (got ", c.num_cycles,
               "); cosine_with_restarts uses it as the number of cosine cycles");
  CVX_CHECK_AS(ConfigError, std::isfinite(c.power), "train.lr_power must be a finite number (got ", c.power, ")");
  if (c.name == "polynomial") {
    // diffusers refuses these too: the curve decays from learning_rate down to its fixed end value,
    // and a negative power divides by zero at the last step.
    CVX_CHECK_AS(ConfigError, c.learning_rate > kPolynomialLrEnd,
                 "train.learning_rate must exceed the polynomial "
                 "schedule's end value ",
                 kPolynomialLrEnd, " (got ", c.learning_rate, "); raise it or pick another train.lr_scheduler");
    CVX_CHECK_AS(ConfigError, c.power >= 0, "train.lr_power must be >= 0 for the polynomial schedule (got ", c.power,
                 ")");
  }
}

double LrSchedule::multiplier(int64_t steps_done) const {
  CVX_CHECK(steps_done >= 0, "LrSchedule: steps_done must be >= 0 (got ", steps_done, ")");
  const auto& c = config_;
  if (c.name == "constant") return 1.0;
  // Every other schedule starts with the same linear warm-up from 0.
  const double s = static_cast<double>(steps_done);
  const int64_t w = c.warmup_steps;
  const int64_t n = c.total_steps;
  if (steps_done < w) return s / static_cast<double>(std::max<int64_t>(1, w));
  if (c.name == "constant_with_warmup") return 1.0;
  if (c.name == "linear")
    return std::max(0.0, static_cast<double>(n - steps_done) / static_cast<double>(std::max<int64_t>(1, n - w)));
  if (c.name == "polynomial") {
    const double end = kPolynomialLrEnd;
    // Past the end the curve holds its end value. With N == W diffusers divides 0 by 0 at s == N;
    // the end value is what the formula gives at s == N for any other W (power > 0).
    if (steps_done > n || n == w) return end / c.learning_rate;
    const double remaining = 1.0 - static_cast<double>(steps_done - w) / static_cast<double>(n - w);
    return ((c.learning_rate - end) * std::pow(remaining, c.power) + end) / c.learning_rate;
  }
  const double progress = static_cast<double>(steps_done - w) / static_cast<double>(std::max<int64_t>(1, n - w));
  if (c.name == "cosine") {
    // diffusers' order of operations (pi * cycles * 2 * progress, cycles = 0.5), for the same doubles.
    return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
  }
  // cosine_with_restarts; progress >= 0 here, where Python's % and fmod agree.
  if (progress >= 1.0) return 0.0;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * std::fmod(static_cast<double>(c.num_cycles) * progress, 1.0))));
}

double LrSchedule::lr(int64_t steps_done) const { return config_.learning_rate * multiplier(steps_done); }

}  // namespace cvx
