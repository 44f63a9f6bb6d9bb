// Text-to-video and image-to-video sampling as the diffusers CogVideoX pipelines run it: prompt
// encoding, latent preparation (1.5 frame padding, I2V image latents), the denoising loop, frame
// dropping, VAE decoding and post-processing. Used by cvx_generate and training validation.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cvx/diffusion/scheduler.h"
#include "cvx/dist/communicator.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/prompt_encoder.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"
#include "cvx/pipeline/denoise.h"

namespace cvx {

struct GenerateRequest {
  std::string prompt;
  std::string negative_prompt;    // "" as in the pipelines
  torch::Tensor image;            // I2V: [H, W, 3] uint8 RGB (resized to width x height)
  int64_t num_frames = 0;         // 0: the sample_frames of the model (49 / 81); 4N+1 (8N+1 as trained)
  int64_t height = 0, width = 0;  // 0: 480x720 (1.0), 768x1360 (1.5)
  DenoiseOptions denoise;
  uint64_t seed = 42;             // CPU generator, as cli_demo.py
  torch::Tensor initial_latents;  // optional: use these instead of drawing the initial noise
  int64_t max_sequence_length = kMaxTextLength;
  // Precomputed text embeddings [1, L, D] (training validation encodes its prompts once at
  // start-up and keeps no T5): used instead of the prompt encoder when defined.
  torch::Tensor prompt_embeds, negative_prompt_embeds;
  // false: stop after denoising (final_latents only; no VAE decode). A rank with no prompt of its
  // own in a validation round still runs the transformer, whose sharded units gather collectively.
  bool decode = true;
};

struct GenerateResult {
  torch::Tensor video;          // [F, 3, H, W] in [0, 1] float32 (undefined when decode = false)
  torch::Tensor final_latents;  // [1, T, C, h, w] before the 1.5 padding is dropped
  torch::Tensor prompt_embeds, negative_prompt_embeds, image_latents;  // as used
};

class VideoPipeline {
 public:
  // A diffusers CogVideoX folder: transformer/, vae/, text_encoder/, tokenizer/, scheduler/.
  // `dtype` for the transformer and text encoder (the VAE too unless `vae_dtype` is given); every
  // model is moved to `device`. Random draws stay on a CPU generator (reproducible across devices).
  static VideoPipeline load(const std::filesystem::path& model_path, torch::Dtype dtype = torch::kBFloat16,
                            std::optional<torch::Dtype> vae_dtype = std::nullopt, torch::Device device = torch::kCPU);
  // A pipeline around models someone else owns (training validation: the transformer being trained,
  // its blocks run by the sharded engine). No prompt encoder: requests carry their embeddings.
  static VideoPipeline from_parts(CogVideoXTransformer transformer, AutoencoderKLCogVideoX vae,
                                  SchedulerConfig scheduler_config, torch::Device device);

  GenerateResult generate(const GenerateRequest& request, const DenoiseCallback& callback = {});

  // Pieces of generate(), also used by validation and tests.
  void resolve_geometry(GenerateRequest& request) const;  // defaults and checks (multiples of 16, frame counts)
  torch::Tensor prepare_image(const torch::Tensor& image_u8, int64_t height,
                              int64_t width) const;    // [1, 3, H, W] in [-1, 1]
  torch::Tensor decode(const torch::Tensor& latents);  // [1, T, C, h, w] scaled -> [F, 3, H, W] in [0, 1]

  CogVideoXTransformer transformer{nullptr};
  AutoencoderKLCogVideoX vae{nullptr};
  std::shared_ptr<PromptEncoder> prompt_encoder;
  SchedulerConfig scheduler_config;
  torch::Device device = torch::kCPU;
  // Sequence parallelism (sequence_parallel_transformer.h): when set with more than one rank, every
  // rank of this group runs generate() with the same request, computes its slice of the tokens
  // and gets the same latents; the caller decides which rank decodes (GenerateRequest::decode).
  Communicator* sequence_group = nullptr;
};

// The scheduler the pipelines sample with: `choice` "dpm", "ddim", or "auto" (DPM for the 5b-class
// models, DDIM for 2b, as the official demo), trailing timestep spacing; the rest from `base` (the
// model folder's scheduler/).
SchedulerConfig sampling_scheduler(SchedulerConfig base, const std::string& choice, const std::string& variant);

}  // namespace cvx
