// CogVideoX DDIM / DPM schedulers against diffusers, for every scheduler case of the golden set:
// the float64 tables, timesteps for every recorded step count, add_noise / get_velocity, the step
// coefficients and every step (fed the recorded inputs, and chained on our own outputs).
#include <gtest/gtest.h>

#include <cmath>

#include "cvx/diffusion/scheduler.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

// README: float64 tables agree to ~1e-15; step outputs (float32 x float64 scalars) to <= 1e-6.
constexpr double kTableAtol = 1e-14;
constexpr double kStepAtol = 1e-6;

bool same_or_both_nan(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(b));
}

}  // namespace

TEST(SchedulerGolden, TablesTimestepsAndForwardProcess) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("scheduler");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    cvx::CogVideoXScheduler scheduler(cvx::SchedulerConfig::from_json(c.meta.at("config")));
    EXPECT_TRUE(cvx::test::all_close(scheduler.betas(), c.tensor("betas"), kTableAtol, 0));
    EXPECT_TRUE(cvx::test::all_close(scheduler.alphas_cumprod(), c.tensor("alphas_cumprod"), kTableAtol, 0));
    EXPECT_EQ(scheduler.final_alpha_cumprod(), c.tensor("final_alpha_cumprod").item<double>());
    for (const auto& [steps, expected] : c.meta.at("timesteps").items()) {
      const auto got = scheduler.set_timesteps(std::stoll(steps));
      EXPECT_EQ(got, expected.get<std::vector<int64_t>>()) << steps << " steps";
      EXPECT_TRUE(torch::equal(torch::tensor(got), c.tensor("timesteps_" + steps))) << steps << " steps";
    }
    const auto x0 = c.tensor("add_noise.original_samples"), noise = c.tensor("add_noise.noise");
    const auto t = c.tensor("add_noise.timesteps");
    EXPECT_TRUE(cvx::test::all_close(scheduler.add_noise(x0, noise, t), c.tensor("add_noise.output"), kStepAtol, 0));
    EXPECT_TRUE(
        cvx::test::all_close(scheduler.get_velocity(x0, noise, t), c.tensor("get_velocity.output"), kStepAtol, 0));
  }
}

TEST(SchedulerGolden, StepsMatchWithRecordedAndChainedInputs) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("scheduler")) {
    SCOPED_TRACE(c.name);
    cvx::CogVideoXScheduler scheduler(cvx::SchedulerConfig::from_json(c.meta.at("config")));
    const auto& step_meta = c.meta.at("step");
    scheduler.set_timesteps(step_meta.at("num_inference_steps").get<int64_t>());
    const auto timesteps = c.tensor("step.timesteps");
    const int64_t num_steps = timesteps.size(0);
    ASSERT_GT(num_steps, 0);
    const bool dpm = scheduler.config().is_dpm();

    // The recorded draws of step i, in the order diffusers consumes them.
    auto recorded_noise = [&](int64_t i) {
      auto draws = std::make_shared<std::vector<torch::Tensor>>();
      for (const char* name : {"noise_a", "noise_b"}) {
        const std::string key = "step." + std::to_string(i) + "." + name;
        if (c.has(key)) draws->push_back(c.tensor(key));
      }
      auto next = std::make_shared<size_t>(0);
      return cvx::CogVideoXScheduler::NoiseFn([draws, next](const torch::Tensor&) {
        if (*next >= draws->size()) throw std::runtime_error("the step drew more noise than diffusers did");
        return (*draws)[(*next)++];
      });
    };

    torch::Tensor chained = c.tensor("step.initial_sample");
    std::optional<torch::Tensor> chained_old_x0;
    for (int64_t i = 0; i < num_steps; ++i) {
      SCOPED_TRACE("step " + std::to_string(i));
      const std::string p = "step." + std::to_string(i) + ".";
      const int64_t t = timesteps[i].item<int64_t>();
      const std::optional<int64_t> t_back =
          i > 0 ? std::optional<int64_t>(timesteps[i - 1].item<int64_t>()) : std::nullopt;
      // Coefficients.
      const auto coef = scheduler.coefficients(t, dpm ? t_back : std::nullopt);
      const std::pair<const char*, double> fields[] = {{"alpha_prod_t", coef.alpha_prod_t},
                                                       {"alpha_prod_t_prev", coef.alpha_prod_t_prev},
                                                       {"alpha_prod_t_back", coef.alpha_prod_t_back},
                                                       {"h", coef.h},
                                                       {"r", coef.r},
                                                       {"mult1", coef.mult1},
                                                       {"mult2", coef.mult2},
                                                       {"mult3", coef.mult3},
                                                       {"mult4", coef.mult4},
                                                       {"mult_noise", coef.mult_noise}};
      for (const auto& [name, value] : fields) {
        const std::string key = std::string("step.coef.") + name;
        if (!c.has(key)) continue;
        const double expected = c.tensor(key)[i].item<double>();
        EXPECT_TRUE(same_or_both_nan(value, expected)) << name << ": " << value << " vs " << expected;
      }
      // Recorded inputs.
      const auto model_output = c.tensor(p + "model_output"), sample = c.tensor(p + "sample");
      std::optional<torch::Tensor> old_x0;
      if (c.has(p + "old_pred_original_sample")) old_x0 = c.tensor(p + "old_pred_original_sample");
      const auto out = dpm ? scheduler.dpm_step(model_output, old_x0, t, t_back, sample, recorded_noise(i))
                           : scheduler.ddim_step(model_output, t, sample);
      EXPECT_TRUE(cvx::test::all_close(out.prev_sample, c.tensor(p + "prev_sample"), kStepAtol, 0)) << "prev_sample";
      EXPECT_TRUE(cvx::test::all_close(out.pred_original_sample, c.tensor(p + "pred_original_sample"), kStepAtol, 0));
      // Chained on our own outputs.
      const auto next = dpm ? scheduler.dpm_step(model_output, chained_old_x0, t, t_back, chained, recorded_noise(i))
                            : scheduler.ddim_step(model_output, t, chained);
      EXPECT_TRUE(cvx::test::all_close(next.prev_sample, c.tensor(p + "prev_sample"), 1e-5, 0)) << "chained";
      chained = next.prev_sample;
      chained_old_x0 = next.pred_original_sample;
    }
  }
}

// The DPM noise comes from a seeded CPU generator exactly as diffusers draws it.
TEST(SchedulerGolden, GeneratorNoiseMatchesTheRecordedDraws) {
  CVX_REQUIRE_GOLDEN();
  size_t draws = 0;
  for (const auto& c : cvx::test::golden_cases("scheduler")) {
    const auto& step_meta = c.meta.at("step");
    if (!step_meta.contains("noise")) continue;
    SCOPED_TRACE(c.name);
    auto generator = at::detail::createCPUGenerator(step_meta.at("noise").at("generator_seed").get<uint64_t>());
    const auto noise = cvx::generator_noise(generator);
    const auto timesteps = c.tensor("step.timesteps");
    for (int64_t i = 0; i < timesteps.size(0); ++i) {
      for (const char* name : {"noise_a", "noise_b"}) {
        const std::string key = "step." + std::to_string(i) + "." + name;
        if (!c.has(key)) continue;
        const auto expected = c.tensor(key);
        EXPECT_TRUE(torch::equal(noise(expected), expected)) << key;
        ++draws;
      }
    }
  }
  if (draws == 0) GTEST_SKIP() << "no scheduler case records generator draws";
}
