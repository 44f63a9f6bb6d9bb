// The denoising loop of the CogVideoX T2V / I2V pipelines: classifier-free guidance (optionally
// dynamic), the scheduler step, image-latent conditioning, exactly as diffusers runs it. Shared by
// cvx_generate and training validation.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <vector>

#include "cvx/diffusion/scheduler.h"
#include "cvx/model/transformer.h"

namespace cvx {

struct DenoiseOptions {
  int64_t num_inference_steps = 50;
  double guidance_scale = 6.0;  // > 1 enables classifier-free guidance
  bool use_dynamic_cfg = false;
};

// What one step saw and produced (for progress reporting and parity tests).
struct DenoiseStep {
  int64_t index = 0;
  int64_t timestep = 0;
  double guidance = 0.0;
  torch::Tensor transformer_input;     // [2B or B, T, Cin, h, w]
  torch::Tensor transformer_output;    // as the transformer returned it
  torch::Tensor noise_pred_guided;     // [B, T, C, h, w] float32
  torch::Tensor latents;               // after the step, in the model dtype
  torch::Tensor pred_original_sample;  // the step's x0 prediction
};
using DenoiseCallback = std::function<void(const DenoiseStep&)>;

// One transformer evaluation as CogVideoXTransformerImpl::forward takes it: x [B, T, Cin, H, W],
// embeds [B, L, D], timesteps [B], ofs, rope -> [B, T, Cout, H, W]. Sequence parallelism swaps in
// a call that computes a slice of the tokens per rank and gathers them.
using TransformerCall =
    std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& embeds, const torch::Tensor& timesteps,
                                const std::optional<torch::Tensor>& ofs, const RotaryEmbedding* rope)>;

// The guidance weight of a step: g, or with dynamic CFG 1 + g (1 - cos(pi ((N - t) / N)^5)) / 2
// with t the integer timestep value, as the reference computes it.
double guidance_at(double guidance_scale, bool dynamic, int64_t timestep, int64_t num_inference_steps);

// latents [B, T, C, h, w]: the initial noise (T already padded for 1.5 models); prompt_embeds
// [B, L, D]; negative_embeds [B, L, D] (used when guidance_scale > 1); image_latents
// [B, T, C, h, w] for I2V (undefined for T2V); ofs for 1.5-I2V; rope for RoPE models.
// Returns the final latents [B, T, C, h, w] in the prompt embeddings' dtype.
torch::Tensor denoise(CogVideoXTransformer& transformer, CogVideoXScheduler& scheduler, torch::Tensor latents,
                      const torch::Tensor& prompt_embeds, const torch::Tensor& negative_embeds,
                      const torch::Tensor& image_latents, const std::optional<torch::Tensor>& ofs,
                      const RotaryEmbedding* rope, const DenoiseOptions& options,
                      const CogVideoXScheduler::NoiseFn& noise, const DenoiseCallback& callback = {});
// The same loop with the transformer evaluated by `call`.
torch::Tensor denoise(const TransformerCall& call, CogVideoXScheduler& scheduler, torch::Tensor latents,
                      const torch::Tensor& prompt_embeds, const torch::Tensor& negative_embeds,
                      const torch::Tensor& image_latents, const std::optional<torch::Tensor>& ofs,
                      const RotaryEmbedding* rope, const DenoiseOptions& options,
                      const CogVideoXScheduler::NoiseFn& noise, const DenoiseCallback& callback = {});

}  // namespace cvx
