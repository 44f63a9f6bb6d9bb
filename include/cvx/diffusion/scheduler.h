// CogVideoXDDIMScheduler and CogVideoXDPMScheduler (diffusers): the noise schedule shared by
// training (add_noise, get_velocity, loss weights) and sampling (set_timesteps, step).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cvx {

struct SchedulerConfig {
  std::string class_name = "CogVideoXDDIMScheduler";  // or CogVideoXDPMScheduler: they differ only in step()
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";
  double snr_shift_scale = 3.0;
  bool rescale_betas_zero_snr = true;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  std::string prediction_type = "v_prediction";
  std::string timestep_spacing = "trailing";

  bool is_dpm() const { return class_name == "CogVideoXDPMScheduler"; }
  nlohmann::json to_json() const;
  // Throws FormatError naming `source` for unsupported settings (trained_betas, clip_sample, ...).
  static SchedulerConfig from_json(const nlohmann::json& json, const std::string& source = "scheduler config");
};

// Released configurations: 2b has snr_shift_scale 3, every 5b-class model 1.
SchedulerConfig scheduler_config_2b();
SchedulerConfig scheduler_config_5b();

class CogVideoXScheduler {
 public:
  explicit CogVideoXScheduler(SchedulerConfig config);
  const SchedulerConfig& config() const { return config_; }

  const torch::Tensor& betas() const { return betas_; }                    // [T] float64
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // [T] float64, ᾱ[T-1] = 0
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }

  // Inference timesteps, descending (trailing spacing: N = 50 -> 999, 979, ..., 19).
  std::vector<int64_t> set_timesteps(int64_t num_inference_steps);
  int64_t num_inference_steps() const { return num_inference_steps_; }

  // x0 [B, ...], noise like x0, t [B] int64 -> sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise (ᾱ cast to x0's dtype first)
  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const;
  // sqrt(ᾱ_t) noise - sqrt(1 - ᾱ_t) sample; with (v̂, x_t) it gives the predicted x0.
  torch::Tensor get_velocity(const torch::Tensor& sample, const torch::Tensor& noise, const torch::Tensor& t) const;
  // The official trainer's loss weight 1 / (1 - ᾱ_t), float64 [B].
  torch::Tensor loss_weights(const torch::Tensor& t) const;

  struct StepOutput {
    torch::Tensor prev_sample;
    torch::Tensor pred_original_sample;
  };
  // Draws Gaussian noise shaped like its argument (the pipeline passes a seeded generator).
  using NoiseFn = std::function<torch::Tensor(const torch::Tensor& like)>;

  // Deterministic DDIM (eta = 0) step from v-prediction.
  StepOutput ddim_step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample) const;
  // DPM-Solver++(2M) SDE step: `old_x0` is the previous step's prediction (none on the first step),
  // `t_back` the previous (larger) timestep. Draws noise once on the first and last steps, twice
  // otherwise (the first draw discarded), exactly as diffusers consumes its generator.
  StepOutput dpm_step(const torch::Tensor& model_output, const std::optional<torch::Tensor>& old_x0, int64_t t,
                      std::optional<int64_t> t_back, const torch::Tensor& sample, const NoiseFn& noise) const;

  // The scalar coefficients of a step, for tests and diagnostics (NaN where undefined).
  struct Coefficients {
    double alpha_prod_t, alpha_prod_t_prev, alpha_prod_t_back, h, r, mult1, mult2, mult3, mult4, mult_noise;
  };
  Coefficients coefficients(int64_t t, std::optional<int64_t> t_back) const;

 private:
  double alpha_at(int64_t t) const;  // ᾱ_t, or final_alpha_cumprod for t < 0
  int64_t prev_timestep(int64_t t) const;

  SchedulerConfig config_;
  torch::Tensor betas_, alphas_cumprod_;
  double final_alpha_cumprod_ = 1.0;
  int64_t num_inference_steps_ = 0;
};

// Noise from a CPU generator (drawn on the CPU, then moved, as diffusers' randn_tensor does).
CogVideoXScheduler::NoiseFn generator_noise(torch::Generator generator);

}  // namespace cvx
