#include "cvx/diffusion/scheduler.h"

#include <cmath>
#include <limits>

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"

namespace cvx {
namespace {

template <class Config, class Visitor>
void visit_fields(Config& c, Visitor&& v) {
  v("beta_end", c.beta_end);
  v("beta_schedule", c.beta_schedule);
  v("beta_start", c.beta_start);
  v("num_train_timesteps", c.num_train_timesteps);
  v("prediction_type", c.prediction_type);
  v("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  v("set_alpha_to_one", c.set_alpha_to_one);
  v("snr_shift_scale", c.snr_shift_scale);
  v("steps_offset", c.steps_offset);
  v("timestep_spacing", c.timestep_spacing);
}

// numpy.round: half to even.
double round_half_even(double x) { return std::nearbyint(x); }

// Python-style 0-dim tensor arithmetic would hold these in float64; so do we.
double half_log_snr(double alpha) { return std::log(std::sqrt(alpha / (1.0 - alpha))); }

torch::Tensor per_sample(const torch::Tensor& values, const torch::Tensor& like) {
  // [B] -> [B, 1, 1, ...] matching `like`'s rank
  auto v = values.flatten();
  while (v.dim() < like.dim()) v = v.unsqueeze(-1);
  return v;
}

}  // namespace

nlohmann::json SchedulerConfig::to_json() const {
  nlohmann::json j;
  j["_class_name"] = class_name;
  j["_diffusers_version"] = "0.32.2";
  j["clip_sample"] = false;
  j["clip_sample_range"] = 1.0;
  j["sample_max_value"] = 1.0;
  j["trained_betas"] = nullptr;
  visit_fields(*this, [&j](const char* key, const auto& field) { write_json_field(j, key, field); });
  return j;
}

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j, const std::string& source) {
  CVX_CHECK_AS(FormatError, j.is_object(), source, ": expected a JSON object");
  SchedulerConfig c;
  if (j.contains("_class_name")) c.class_name = j["_class_name"].get<std::string>();
  CVX_CHECK_AS(FormatError, c.class_name == "CogVideoXDDIMScheduler" || c.class_name == "CogVideoXDPMScheduler", source,
               ": _class_name '", c.class_name, "' is not CogVideoXDDIMScheduler or CogVideoXDPMScheduler");
  visit_fields(c, [&](const char* key, auto& field) { read_json_field(j, key, field, source); });
  CVX_CHECK_AS(FormatError, c.beta_schedule == "scaled_linear" || c.beta_schedule == "linear", source,
               ": beta_schedule '", c.beta_schedule, "' is not supported (CogVideoX uses scaled_linear)");
  CVX_CHECK_AS(FormatError, !j.contains("trained_betas") || j["trained_betas"].is_null(), source,
               ": trained_betas are not supported");
  CVX_CHECK_AS(FormatError, !j.value("clip_sample", false), source, ": clip_sample is not supported");
  CVX_CHECK_AS(FormatError, c.prediction_type == "v_prediction", source, ": prediction_type '", c.prediction_type,
               "' is not supported (CogVideoX predicts v)");
  CVX_CHECK_AS(FormatError,
               c.timestep_spacing == "trailing" || c.timestep_spacing == "leading" || c.timestep_spacing == "linspace",
               source, ": timestep_spacing '", c.timestep_spacing, "' is not one of trailing, leading, linspace");
  CVX_CHECK_AS(FormatError, c.num_train_timesteps > 1, source, ": num_train_timesteps must be > 1");
  return c;
}

SchedulerConfig scheduler_config_2b() { return SchedulerConfig{}; }

SchedulerConfig scheduler_config_5b() {
  SchedulerConfig c;
  c.snr_shift_scale = 1.0;
  return c;
}

CogVideoXScheduler::CogVideoXScheduler(SchedulerConfig config) : config_(std::move(config)) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t n = config_.num_train_timesteps;
  if (config_.beta_schedule == "scaled_linear") {
    betas_ = torch::linspace(std::sqrt(config_.beta_start), std::sqrt(config_.beta_end), n, opts).pow(2);
  } else {
    // diffusers builds the plain linear schedule in float32.
    betas_ = torch::linspace(config_.beta_start, config_.beta_end, n, torch::kFloat32).to(torch::kFloat64);
  }
  auto alphas_cumprod = torch::cumprod(1.0 - betas_, 0);
  const double s = config_.snr_shift_scale;
  alphas_cumprod = alphas_cumprod / (s + (1 - s) * alphas_cumprod);
  if (config_.rescale_betas_zero_snr) {
    auto a = alphas_cumprod.sqrt();
    const double a0 = a[0].item<double>(), at = a[n - 1].item<double>();
    a = a - at;
    a = a * (a0 / (a0 - at));
    alphas_cumprod = a.pow(2);
  }
  alphas_cumprod_ = alphas_cumprod;
  // set_alpha_to_one: a float32 1.0 in diffusers; exactly 1 either way.
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0 : alphas_cumprod_[0].item<double>();
}

std::vector<int64_t> CogVideoXScheduler::set_timesteps(int64_t steps) {
  const int64_t n = config_.num_train_timesteps;
  CVX_CHECK_AS(ConfigError, steps > 0 && steps <= n, "num_inference_steps must be in [1, ", n, "], got ", steps);
  std::vector<int64_t> out;
  if (config_.timestep_spacing == "trailing") {
    // numpy.arange(n, 0, -ratio): length ceil(n / ratio), values n - i * ratio, then round and - 1.
    const double ratio = static_cast<double>(n) / static_cast<double>(steps);
    const auto length = static_cast<int64_t>(std::ceil((0.0 - static_cast<double>(n)) / -ratio));
    for (int64_t i = 0; i < length; ++i)
      out.push_back(static_cast<int64_t>(round_half_even(static_cast<double>(n) + static_cast<double>(i) * -ratio)) -
                    1);
  } else if (config_.timestep_spacing == "leading") {
    const int64_t ratio = n / steps;
    for (int64_t i = steps - 1; i >= 0; --i) out.push_back(i * ratio + config_.steps_offset);
  } else {  // linspace
    const auto grid = torch::linspace(0.0, static_cast<double>(n - 1), steps, torch::kFloat64);
    for (int64_t i = steps - 1; i >= 0; --i)
      out.push_back(static_cast<int64_t>(round_half_even(grid[i].item<double>())));
  }
  num_inference_steps_ = steps;
  return out;
}

double CogVideoXScheduler::alpha_at(int64_t t) const {
  return t >= 0 ? alphas_cumprod_[t].item<double>() : final_alpha_cumprod_;
}

int64_t CogVideoXScheduler::prev_timestep(int64_t t) const {
  CVX_CHECK(num_inference_steps_ > 0, "scheduler step() called before set_timesteps()");
  return t - config_.num_train_timesteps / num_inference_steps_;
}

torch::Tensor CogVideoXScheduler::add_noise(const torch::Tensor& x0, const torch::Tensor& noise,
                                            const torch::Tensor& t) const {
  const auto ac = alphas_cumprod_.to(x0.device(), x0.scalar_type()).index_select(0, t.to(x0.device()).flatten());
  return per_sample(ac.sqrt(), x0) * x0 + per_sample((1 - ac).sqrt(), x0) * noise;
}

torch::Tensor CogVideoXScheduler::get_velocity(const torch::Tensor& sample, const torch::Tensor& noise,
                                               const torch::Tensor& t) const {
  const auto ac =
      alphas_cumprod_.to(sample.device(), sample.scalar_type()).index_select(0, t.to(sample.device()).flatten());
  return per_sample(ac.sqrt(), sample) * noise - per_sample((1 - ac).sqrt(), sample) * sample;
}

torch::Tensor CogVideoXScheduler::loss_weights(const torch::Tensor& t) const {
  return 1.0 / (1.0 - alphas_cumprod_.index_select(0, t.cpu().flatten()));
}

CogVideoXScheduler::Coefficients CogVideoXScheduler::coefficients(int64_t t, std::optional<int64_t> t_back) const {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Coefficients c{};
  c.alpha_prod_t = alpha_at(t);
  c.alpha_prod_t_prev = alpha_at(prev_timestep(t));
  c.alpha_prod_t_back = t_back ? alpha_at(*t_back) : nan;
  if (!config_.is_dpm()) {
    c.mult1 = std::sqrt((1 - c.alpha_prod_t_prev) / (1 - c.alpha_prod_t));
    c.mult2 = std::sqrt(c.alpha_prod_t_prev) - std::sqrt(c.alpha_prod_t) * c.mult1;
    c.h = c.r = c.mult3 = c.mult4 = c.mult_noise = nan;
    return c;
  }
  const double lambda_t = half_log_snr(c.alpha_prod_t), lambda_p = half_log_snr(c.alpha_prod_t_prev);
  c.h = lambda_p - lambda_t;
  c.r = t_back ? (lambda_t - half_log_snr(c.alpha_prod_t_back)) / c.h : nan;
  c.mult1 = std::sqrt((1 - c.alpha_prod_t_prev) / (1 - c.alpha_prod_t)) * std::exp(-c.h);
  c.mult2 = std::expm1(-2 * c.h) * std::sqrt(c.alpha_prod_t_prev);
  c.mult3 = t_back ? 1 + 1 / (2 * c.r) : nan;
  c.mult4 = t_back ? 1 / (2 * c.r) : nan;
  c.mult_noise = std::sqrt(1 - c.alpha_prod_t_prev) * std::sqrt(1 - std::exp(-2 * c.h));
  return c;
}

namespace {
// v-prediction: x0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v
torch::Tensor predict_x0(double alpha_t, const torch::Tensor& v, const torch::Tensor& sample) {
  return std::sqrt(alpha_t) * sample - std::sqrt(1 - alpha_t) * v;
}
}  // namespace

CogVideoXScheduler::StepOutput CogVideoXScheduler::ddim_step(const torch::Tensor& model_output, int64_t t,
                                                             const torch::Tensor& sample) const {
  const auto c = coefficients(t, std::nullopt);
  const auto x0 = predict_x0(c.alpha_prod_t, model_output, sample);
  return {c.mult1 * sample + c.mult2 * x0, x0};
}

CogVideoXScheduler::StepOutput CogVideoXScheduler::dpm_step(const torch::Tensor& model_output,
                                                            const std::optional<torch::Tensor>& old_x0, int64_t t,
                                                            std::optional<int64_t> t_back, const torch::Tensor& sample,
                                                            const NoiseFn& noise) const {
  const auto c = coefficients(t, t_back);
  const auto x0 = predict_x0(c.alpha_prod_t, model_output, sample);
  const auto first = noise(sample);
  if (!old_x0 || prev_timestep(t) < 0) return {c.mult1 * sample - c.mult2 * x0 + c.mult_noise * first, x0};
  const auto denoised = c.mult3 * x0 - c.mult4 * *old_x0;
  const auto second = noise(sample);
  return {c.mult1 * sample - c.mult2 * denoised + c.mult_noise * second, x0};
}

CogVideoXScheduler::NoiseFn generator_noise(torch::Generator generator) {
  return [generator](const torch::Tensor& like) {
    return torch::randn(like.sizes(), generator, like.options().device(torch::kCPU)).to(like.device());
  };
}

}  // namespace cvx
