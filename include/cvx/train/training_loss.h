// The training objective of the official CogVideo fine-tuning scheme (finetune/models/
// cogvideox_{t2v,i2v}/lora_trainer.py compute_loss; shared spec finetune.md §3), with every
// random draw an explicit input so that it is testable against the golden `loss/*` cases and
// reproducible independently of how samples are spread over ranks.
//
//   1.5 (patch_size_t): PREPEND ncopy = F % patch_size_t copies of the first latent frame, as the
//   reference does (patch_size_t = 2: an odd count becomes even; the padded frame is part of the
//   loss);  x0 -> [B, F, C, h, w];  x_t = add_noise(x0, noise, t);  I2V: image latents (below)
//   zero-padded over frames 1.. and concatenated with x_t on channels, ofs = 2.0 for 1.5-I2V;
//   rotary tables: training_rotary_embedding;  v = transformer(x_t, prompt, t[, ofs]);
//   x0_hat = sqrt(a_t) x_t - sqrt(1 - a_t) v  (float32);
//   loss = mean_b mean( (1 / (1 - a_t)) (x0_hat - x0)^2 )  (weights float64, as the reference, so the
//   per-sample losses and the loss are float64).
//
// I2V image latents, mode "encode" (official): noisy = image + sigma * image_noise with
// sigma = exp(N(-3, 0.5)); VAE-encode [B, 3, 1, H, W] (frozen, no gradients), sample
// mean + std * image_latent_eps, scale; mode "cached": the store's clean first-frame posterior,
// sampled the same way, scaled. Where image_keep is false the image latents are zeros
// (noised_image_dropout of SAT / the diffusers example; the official trainer has none).
//
// Deliberate difference: the official trainer draws ONE sigma per batch; we draw one per sample
// ([B]), so that a sample's draws do not depend on which samples share its batch. (Equal for
// batch 1, the official default.) For full independence of the grouping into micro-batches and
// ranks, draw each sample from its own generator with batch 1 and concatenate_loss_draws.
#pragma once
#include <torch/torch.h>

#include <optional>
#include <vector>

#include "cvx/diffusion/scheduler.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"

namespace cvx {

enum class ImageLatentScale { multiply, divide };  // x scaling_factor (official trainer) or / (1.5-I2V pipeline)

// One micro-batch as the loss sees it.
struct LossInputs {
  torch::Tensor latents;        // [B, C, F', h, w] clean, scaled video latents x0 (before 1.5 padding)
  torch::Tensor prompt_embeds;  // [B, L, D]
  // I2V, one of:
  torch::Tensor images;         // [B, 3, H, W] in [-1, 1]  (mode encode: needs a VAE)
  torch::Tensor image_moments;  // [B, 2C, 1, h, w] posterior moments of the clean image (mode cached)
};

// Every random draw of one micro-batch. Shapes: see draw_loss_randoms.
struct LossDraws {
  torch::Tensor timesteps;          // [B] int64 in [0, num_train_timesteps)
  torch::Tensor noise;              // [B, F, C, h, w]  (F after 1.5 padding)
  torch::Tensor image_noise_sigma;  // [B] (drawn; [1] = one per batch as the reference, accepted)  I2V encode
  torch::Tensor image_noise;        // [B, 3, 1, H, W]  I2V encode
  torch::Tensor image_latent_eps;   // [B, C, 1, h, w]  I2V (both modes)
  torch::Tensor image_keep;         // [B] bool, false = image latents dropped (noised_image_dropout); undefined = keep
};

// The draws of several micro-batches (or single samples) as one, concatenated along the batch.
// Undefined fields must be undefined in every part; a [1] sigma is expanded to its part's batch.
LossDraws concatenate_loss_draws(const std::vector<LossDraws>& parts);

struct LossOutputs {
  torch::Tensor loss;             // [] float64 (differentiable)
  torch::Tensor per_sample_loss;  // [B] float64
  torch::Tensor model_pred;       // [B, F, C, h, w]
  torch::Tensor latent_pred;      // [B, F, C, h, w] x0_hat
  torch::Tensor weights;          // [B] float64
  // intermediates for tests
  torch::Tensor latent, noisy_latents, image_latents, transformer_input;
};

struct LossOptions {
  bool i2v = false;  // from the transformer config (in_channels = 2 x out_channels); checked against it
  ImageLatentScale image_scale = ImageLatentScale::multiply;
  double vae_scaling_factor = 0.7;
  // Sequence parallelism: only these video tokens (transformer forward_tokens; the attention
  // runner sees the rest). The loss is then this slice's share: the sum over the slices of a
  // sample's tokens is the sample's loss (per-sample terms divided by the WHOLE sample's element
  // count), and model_pred / latent_pred are tokens [B, n, K]. Length -1: the whole sample.
  VideoTokenSlice token_slice;
};

// The latent frame count the transformer sees for `latent_frames` stored frames:
// latent_frames + latent_frames % patch_size_t (1.5: even), else latent_frames.
int64_t padded_latent_frames(const TransformerConfig& config, int64_t latent_frames);

// Draws everything for one micro-batch from `generator` (CPU), in a fixed order: timesteps, noise,
// then (I2V) [encode_images: sigma, image noise,] image latent eps, dropout uniforms (drawn even
// when image_dropout is 0, so the stream does not depend on it). `latent_frames` as stored (before
// 1.5 padding); `image_height`, `image_width` in pixels (used with encode_images). CPU tensors.
LossDraws draw_loss_randoms(at::Generator generator, const TransformerConfig& config, int64_t batch,
                            int64_t latent_channels, int64_t latent_frames, int64_t latent_height, int64_t latent_width,
                            int64_t image_height, int64_t image_width, bool i2v, bool encode_images,
                            double image_dropout, int64_t num_train_timesteps = 1000);

// The loss of one micro-batch. Runs the transformer in its compute dtype (inputs cast to it, the
// prediction cast back to float32), the loss arithmetic in float32 / float64 as above, on the device
// of `inputs.latents` (draws are moved there). `vae` is required for I2V with `inputs.images`; I2V
// takes exactly one of `images` (mode encode) and `image_moments` (mode cached).
LossOutputs compute_training_loss(CogVideoXTransformer& transformer, const CogVideoXScheduler& scheduler,
                                  const LossInputs& inputs, const LossDraws& draws, const LossOptions& options,
                                  AutoencoderKLCogVideoX* vae = nullptr);

}  // namespace cvx
