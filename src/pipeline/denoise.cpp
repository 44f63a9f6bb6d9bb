#include "cvx/pipeline/denoise.h"

#include <cmath>

#include "cvx/core/error.h"

namespace cvx {

double guidance_at(double guidance_scale, bool dynamic, int64_t timestep, int64_t num_inference_steps) {
  if (!dynamic) return guidance_scale;
  const double n = static_cast<double>(num_inference_steps);
  // ((N - t) / N)^5 of a negative base is negative (the reference's "wave" schedule, kept on purpose).
  const double x = std::pow((n - static_cast<double>(timestep)) / n, 5.0);
  return 1 + guidance_scale * (1 - std::cos(M_PI * x)) / 2;
}

torch::Tensor denoise(CogVideoXTransformer& transformer, CogVideoXScheduler& scheduler, torch::Tensor latents,
                      const torch::Tensor& prompt_embeds, const torch::Tensor& negative_embeds,
                      const torch::Tensor& image_latents, const std::optional<torch::Tensor>& ofs,
                      const RotaryEmbedding* rope, const DenoiseOptions& options,
                      const CogVideoXScheduler::NoiseFn& noise, const DenoiseCallback& callback) {
  const TransformerCall call = [&](const torch::Tensor& x, const torch::Tensor& embeds, const torch::Tensor& t,
                                   const std::optional<torch::Tensor>& o,
                                   const RotaryEmbedding* r) { return transformer->forward(x, embeds, t, o, r); };
  return denoise(call, scheduler, std::move(latents), prompt_embeds, negative_embeds, image_latents, ofs, rope, options,
                 noise, callback);
}

torch::Tensor denoise(const TransformerCall& call, CogVideoXScheduler& scheduler, torch::Tensor latents,
                      const torch::Tensor& prompt_embeds, const torch::Tensor& negative_embeds,
                      const torch::Tensor& image_latents, const std::optional<torch::Tensor>& ofs,
                      const RotaryEmbedding* rope, const DenoiseOptions& options,
                      const CogVideoXScheduler::NoiseFn& noise, const DenoiseCallback& callback) {
  torch::NoGradGuard no_grad;
  const bool cfg = options.guidance_scale > 1.0;
  CVX_CHECK(!cfg || negative_embeds.defined(), "denoise: classifier-free guidance needs negative prompt embeddings");
  const auto dtype = prompt_embeds.scalar_type();
  const auto embeds = cfg ? torch::cat({negative_embeds, prompt_embeds}, 0) : prompt_embeds;  // negative first
  const auto image_in =
      image_latents.defined() ? (cfg ? torch::cat({image_latents, image_latents}, 0) : image_latents) : torch::Tensor();
  const auto timesteps = scheduler.set_timesteps(options.num_inference_steps);
  const bool dpm = scheduler.config().is_dpm();
  std::optional<torch::Tensor> old_x0;
  for (size_t i = 0; i < timesteps.size(); ++i) {
    const int64_t t = timesteps[i];
    auto x_in = cfg ? torch::cat({latents, latents}, 0) : latents;
    if (image_in.defined()) x_in = torch::cat({x_in, image_in}, 2);
    const auto t_batch = torch::full({x_in.size(0)}, t, torch::kLong);
    const auto raw = call(x_in, embeds, t_batch, ofs, rope);
    auto v = raw.to(torch::kFloat32);
    const double w = guidance_at(options.guidance_scale, options.use_dynamic_cfg, t, options.num_inference_steps);
    if (cfg) {
      const auto halves = v.chunk(2, 0);
      v = halves[0] + w * (halves[1] - halves[0]);
    }
    CogVideoXScheduler::StepOutput out;
    if (dpm) {
      const std::optional<int64_t> t_back = i > 0 ? std::optional<int64_t>(timesteps[i - 1]) : std::nullopt;
      out = scheduler.dpm_step(v, old_x0, t, t_back, latents, noise);
      old_x0 = out.pred_original_sample;
    } else {
      out = scheduler.ddim_step(v, t, latents);
    }
    latents = out.prev_sample.to(dtype);
    if (callback) callback({static_cast<int64_t>(i), t, w, x_in, raw, v, latents, out.pred_original_sample});
  }
  return latents;
}

}  // namespace cvx
