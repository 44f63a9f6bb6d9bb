// The six schedules against values worked out by hand from diffusers v0.32.2's formulas
// (src/diffusers/optimization.py; the formulas are restated in cvx/train/lr_schedule.h).
#include "cvx/train/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "cvx/core/error.h"

namespace {

cvx::LrSchedule make(const std::string& name, int64_t warmup, int64_t total, double lr = 2e-5, int64_t cycles = 1,
                     double power = 1.0) {
  cvx::LrScheduleConfig c;
  c.name = name;
  c.learning_rate = lr;
  c.warmup_steps = warmup;
  c.total_steps = total;
  c.num_cycles = cycles;
  c.power = power;
  return cvx::LrSchedule(c);
}

std::string config_error(const cvx::LrScheduleConfig& c) {
  try {
    cvx::LrSchedule schedule(c);
  } catch (const cvx::ConfigError& e) {
    return e.what();
  }
  return "";
}

const std::vector<std::string> kWarmupSchedules{"constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                                                "polynomial"};

}  // namespace

TEST(LrSchedule, ConstantIsThePeakAtEveryStepEvenWithWarmupSet) {
  // lambda = 1 regardless of W and N (get_constant_schedule takes neither).
  const auto s = make("constant", /*warmup=*/100, /*total=*/10);
  for (int64_t step : {0, 1, 99, 100, 10, 1000}) {
    EXPECT_EQ(s.multiplier(step), 1.0) << step;
    EXPECT_EQ(s.lr(step), 2e-5) << step;
  }
}

TEST(LrSchedule, ConstantWithWarmupRampsLinearlyThenHolds) {
  const auto s = make("constant_with_warmup", 100, 1000);
  EXPECT_EQ(s.multiplier(0), 0.0);  // 0 / 100: the first optimizer step has lr 0
  EXPECT_EQ(s.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(s.multiplier(1), 0.01);   // 1 / 100
  EXPECT_DOUBLE_EQ(s.multiplier(50), 0.5);   // 50 / 100
  EXPECT_DOUBLE_EQ(s.multiplier(99), 0.99);  // 99 / 100
  EXPECT_EQ(s.multiplier(100), 1.0);         // s = W leaves the warm-up
  EXPECT_EQ(s.multiplier(1000), 1.0);        // s = N
  EXPECT_DOUBLE_EQ(s.lr(50), 1e-5);          // 2e-5 x 0.5
  // W = 0: no warm-up, the first step already has the peak (s < W never holds).
  EXPECT_EQ(make("constant_with_warmup", 0, 10).multiplier(0), 1.0);
}

TEST(LrSchedule, LinearDecaysToZeroAtTheLastStep) {
  // W = 10, N = 110: after the warm-up lambda = (110 - s) / (110 - 10).
  const auto s = make("linear", 10, 110);
  EXPECT_DOUBLE_EQ(s.multiplier(5), 0.5);     // warm-up: 5 / 10
  EXPECT_EQ(s.multiplier(10), 1.0);           // 100 / 100
  EXPECT_DOUBLE_EQ(s.multiplier(60), 0.5);    // 50 / 100
  EXPECT_DOUBLE_EQ(s.multiplier(109), 0.01);  // 1 / 100: the last optimizer step of the run
  EXPECT_EQ(s.multiplier(110), 0.0);          // 0 / 100
  EXPECT_EQ(s.multiplier(200), 0.0);          // max(0, -90 / 100)
}

TEST(LrSchedule, LinearWithWarmupLongerThanTheRunFollowsDiffusers) {
  // W = 20 > N = 10: the warm-up runs on past N; at s = W, (10 - 20) / max(1, -10) = -10, clamped to 0.
  const auto s = make("linear", 20, 10);
  EXPECT_DOUBLE_EQ(s.multiplier(15), 0.75);  // 15 / 20
  EXPECT_EQ(s.multiplier(20), 0.0);
}

TEST(LrSchedule, CosineIsAHalfCosineFromPeakToZero) {
  // W = 10, N = 110: p = (s - 10) / 100, lambda = 0.5 (1 + cos(pi p)) (cycles 0.5: pi x 0.5 x 2 = pi).
  const auto s = make("cosine", 10, 110);
  EXPECT_DOUBLE_EQ(s.multiplier(5), 0.5);                          // warm-up 5 / 10
  EXPECT_EQ(s.multiplier(10), 1.0);                                // p = 0: 0.5 (1 + 1)
  EXPECT_DOUBLE_EQ(s.multiplier(35), 0.5 + std::sqrt(2.0) / 4);    // p = 1/4: 0.5 (1 + sqrt(2)/2)
  EXPECT_NEAR(s.multiplier(60), 0.5, 1e-15);                       // p = 1/2: cos(pi/2) = 0
  EXPECT_NEAR(s.multiplier(85), 0.5 - std::sqrt(2.0) / 4, 1e-15);  // p = 3/4: 0.5 (1 - sqrt(2)/2)
  EXPECT_EQ(s.multiplier(110), 0.0);                               // p = 1: 0.5 (1 + cos(pi)) = 0
  EXPECT_DOUBLE_EQ(s.lr(35), 2e-5 * (0.5 + std::sqrt(2.0) / 4));
}

TEST(LrSchedule, CosineWithRestartsRestartsEachCycle) {
  // W = 0, N = 100, 2 cycles: p = s / 100, lambda = 0.5 (1 + cos(pi ((2 p) mod 1))), 0 once p >= 1.
  const auto s = make("cosine_with_restarts", 0, 100, 2e-5, /*cycles=*/2);
  EXPECT_EQ(s.multiplier(0), 1.0);            // (0) mod 1 = 0
  EXPECT_NEAR(s.multiplier(25), 0.5, 1e-15);  // 0.5 mod 1 = 0.5: cos(pi/2) = 0
  EXPECT_EQ(s.multiplier(50), 1.0);           // 1.0 mod 1 = 0: the restart, back at the peak
  EXPECT_NEAR(s.multiplier(75), 0.5, 1e-15);  // 1.5 mod 1 = 0.5
  // 1.98 mod 1 = 0.98: 0.5 (1 + cos(0.98 pi)) = 0.5 (1 - cos(0.02 pi)), the run's last step.
  EXPECT_NEAR(s.multiplier(99), 0.5 * (1 - std::cos(0.02 * M_PI)), 1e-15);
  EXPECT_EQ(s.multiplier(100), 0.0);  // p = 1: 0 (no restart at the end)
  EXPECT_EQ(s.multiplier(150), 0.0);  // p = 1.5 >= 1
}

TEST(LrSchedule, CosineWithRestartsOfOneCycleIsTheCosineSchedule) {
  // cos(pi ((1 x p) mod 1)) = cos(pi p) for p in [0, 1); both are 0 at p = 1.
  const auto restarts = make("cosine_with_restarts", 10, 110, 2e-5, 1);
  const auto cosine = make("cosine", 10, 110);
  for (int64_t step = 0; step <= 110; ++step) EXPECT_NEAR(restarts.lr(step), cosine.lr(step), 1e-20) << step;
}

TEST(LrSchedule, PolynomialDecaysToTheFixedEndValue) {
  // lr = 1e-4, end = 1e-7, W = 10, N = 110: r = 1 - (s - 10) / 100,
  // lambda = ((1e-4 - 1e-7) r^power + 1e-7) / 1e-4 = 0.999 r^power + 0.001.
  const auto linear = make("polynomial", 10, 110, 1e-4, 1, /*power=*/1.0);
  EXPECT_DOUBLE_EQ(linear.multiplier(5), 0.5);       // warm-up 5 / 10
  EXPECT_DOUBLE_EQ(linear.multiplier(10), 1.0);      // r = 1: 0.999 + 0.001
  EXPECT_DOUBLE_EQ(linear.multiplier(35), 0.75025);  // r = 0.75: 0.74925 + 0.001
  EXPECT_DOUBLE_EQ(linear.multiplier(110), 0.001);   // r = 0: end / lr
  EXPECT_DOUBLE_EQ(linear.multiplier(500), 0.001);   // s > N: end / lr
  EXPECT_DOUBLE_EQ(linear.lr(110), 1e-7);
  const auto square = make("polynomial", 10, 110, 1e-4, 1, /*power=*/2.0);
  EXPECT_DOUBLE_EQ(square.multiplier(60), 0.25075);    // r = 0.5: 0.999 x 0.25 + 0.001
  EXPECT_DOUBLE_EQ(square.multiplier(85), 0.0634375);  // r = 0.25: 0.999 x 0.0625 + 0.001
}

TEST(LrSchedule, PolynomialWithWarmupAsLongAsTheRunEndsAtTheEndValue) {
  // N = W = 10: every step of the run warms up; at s = N diffusers divides 0 by 0, here end / lr.
  const auto s = make("polynomial", 10, 10, 1e-4);
  EXPECT_DOUBLE_EQ(s.multiplier(9), 0.9);
  EXPECT_DOUBLE_EQ(s.multiplier(10), 0.001);
}

TEST(LrSchedule, EveryWarmupScheduleStartsAtZeroAndReachesThePeakAtW) {
  for (const auto& name : kWarmupSchedules) {
    const auto s = make(name, 40, 400, 1e-4);
    EXPECT_EQ(s.lr(0), 0.0) << name;                        // 0 / 40
    EXPECT_DOUBLE_EQ(s.multiplier(39), 39.0 / 40) << name;  // last warm-up step
    EXPECT_DOUBLE_EQ(s.multiplier(40), 1.0) << name;        // s = W: every decay starts at its peak
    EXPECT_DOUBLE_EQ(s.lr(40), 1e-4) << name;
  }
}

TEST(LrSchedule, LrIsThePeakTimesTheMultiplier) {
  // LambdaLR: lr = base_lr x lambda(s).
  for (const auto& name : kWarmupSchedules) {
    const auto s = make(name, 7, 50, 3e-4, 3, 1.5);
    for (int64_t step = 0; step <= 60; ++step) EXPECT_EQ(s.lr(step), 3e-4 * s.multiplier(step)) << name << " " << step;
  }
}

TEST(LrSchedule, InvalidConfigsNameTheOption) {
  const auto expect_error = [](cvx::LrScheduleConfig c, const std::string& option) {
    const std::string message = config_error(c);
    EXPECT_NE(message.find(option), std::string::npos) << "expected an error naming " << option << ", got: " << message;
  };
  cvx::LrScheduleConfig good;
  good.total_steps = 100;
  EXPECT_EQ(config_error(good), "");

  auto unknown = good;
  unknown.name = "cosine_annealing";
  expect_error(unknown, "train.lr_scheduler");
  EXPECT_NE(config_error(unknown).find("constant_with_warmup"), std::string::npos);  // lists the choices

  auto warmup = good;
  warmup.warmup_steps = -1;
  expect_error(warmup, "train.lr_warmup_steps");

  for (int64_t total : {0, -5}) {
    auto steps = good;
    steps.total_steps = total;
    expect_error(steps, "train.train_steps");
  }

  for (int64_t cycles : {0, -1}) {
    auto c = good;
    c.name = "cosine_with_restarts";
    c.num_cycles = cycles;
    expect_error(c, "train.lr_num_cycles");
  }

  auto rate = good;
  rate.learning_rate = 0;
  expect_error(rate, "train.learning_rate");

  // diffusers raises for these: the polynomial decays towards 1e-7, and 0^negative at the end.
  auto below_end = good;
  below_end.name = "polynomial";
  below_end.learning_rate = 1e-7;
  expect_error(below_end, "train.learning_rate");
  auto power = good;
  power.name = "polynomial";
  power.power = -1;
  expect_error(power, "train.lr_power");
}

TEST(LrSchedule, NegativeStepIsAProgrammingError) {
  const auto s = make("linear", 0, 10);
  EXPECT_THROW(s.multiplier(-1), cvx::Error);
}
