// Validation videos during training, rendered with the model being trained: the same transformer
// object, its blocks gathered by the sharded engine as in training, at the current LoRA strength;
// no second copy of the transformer exists.
//
// Rules:
// - The prompts are split over the ranks: prompt i on rank i mod world size, in rounds of one
//   prompt per rank. The engine's gathers are collective, so every rank runs the transformer in
//   every round; a rank without a prompt in the last round denoises a dummy (zero embeddings) and
//   writes nothing.
// - T5 never stays: each rank encodes its own prompts (and the negative prompt) once, before the
//   transformer is built, then frees the text encoder. The VAE is loaded for each validation and
//   freed afterwards (keep_vae = free), or kept in host memory between validations (cpu).
// - Validation draws from its own seeded CPU generator and runs with dropout off: the training
//   run's losses are the same with and without it.
// - Outputs: output_dir/validation/step-N/{index}_{slug}.mp4 and contact_sheet.png (one row per
//   prompt: first, middle and last frame), written under temporary names and renamed.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cvx/diffusion/scheduler.h"
#include "cvx/dist/communicator.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"
#include "cvx/train/train_config.h"

namespace cvx {

struct ValidationPrompt {
  int64_t index = 0;  // 0-based, in list order
  std::string prompt;
  std::filesystem::path image;  // I2V; empty for T2V
  std::string where;            // "FILE line N" or "[validation] prompts #N", for messages
};

// "A panda, playing guitar!" -> "a_panda_playing_guitar": lowercase ASCII letters and digits, runs
// of anything else one '_', at most `max_length` characters, "prompt" when nothing is left.
std::string prompt_slug(const std::string& prompt, size_t max_length = 40);
// "a:::b" -> {"a", "b"}, each trimmed; empty pieces are a ConfigError naming `option`.
std::vector<std::string> split_list_option(const std::string& text, const std::string& option);
// The prompts of [validation] (dir or prompts), with their images when `i2v`; checks that the
// lists match and the images exist (ConfigError naming the file, line or option).
std::vector<ValidationPrompt> load_validation_prompts(const ValidationConfig& config, bool i2v);

// frames [F, H, W, 3] uint8 -> [h, 3 w + 2 gap, 3] uint8: first, middle and last frame side by
// side, scaled (area) to `height` when they are taller.
torch::Tensor contact_strip(const torch::Tensor& frames, int64_t height, int64_t gap = 4);
// Strips [h, W, 3] -> one image [n h + (n - 1) gap, W, 3] (white between rows).
torch::Tensor stack_strips(const std::vector<torch::Tensor>& strips, int64_t gap = 4);

struct ValidationSetup {
  std::filesystem::path model_path;  // the diffusers folder (text_encoder/, tokenizer/, vae/)
  std::filesystem::path output_dir;
  torch::Dtype dtype = torch::kBFloat16;  // the transformer's compute dtype
  torch::Device device = torch::kCPU;
  int64_t frames = 0, height = 0, width = 0;  // the training resolution
  TransformerConfig transformer;
  SchedulerConfig scheduler;  // the model folder's (the training noise schedule)
};

struct ValidationResult {
  std::filesystem::path dir;  // output_dir/validation/step-N
  double seconds = 0;
  int64_t num_videos = 0;
  // Rank 0 only: (tag, first frame [h, w, 3] uint8 as in the contact sheet) per prompt.
  std::vector<std::pair<std::string, torch::Tensor>> first_frames;
};

class Validator {
 public:
  // Reads the prompt lists and checks them (before anything heavy).
  Validator(const ValidationConfig& config, ValidationSetup setup, int rank, int world_size);

  // Loads T5 on this rank's device, encodes this rank's prompts and the negative prompt, frees T5.
  void encode_prompts();
  // Whether validation runs after optimizer step `step` of `total_steps`.
  bool due(int64_t step, int64_t total_steps) const;
  // Renders every prompt (collective: every rank of `comm` calls it with the same step). The
  // caller puts the model in eval mode and back. With a `sequence_group` (sequence parallelism),
  // `rank` and `world_size` given to the constructor are the data-parallel ones: the ranks of a
  // group render the same prompt together, each a slice of its tokens, and the group's first rank
  // decodes and writes it.
  ValidationResult run(int64_t step, CogVideoXTransformer& transformer, Communicator& comm,
                       Communicator* sequence_group = nullptr);

  int64_t num_prompts() const { return static_cast<int64_t>(prompts_.size()); }

 private:
  AutoencoderKLCogVideoX acquire_vae();
  void release_vae(AutoencoderKLCogVideoX& vae);

  ValidationConfig config_;
  ValidationSetup setup_;
  int rank_ = 0, world_size_ = 1;
  std::vector<ValidationPrompt> prompts_;
  std::vector<torch::Tensor> embeds_;  // per prompt of this rank ([1, L, D]); undefined for others
  torch::Tensor negative_embeds_, dummy_embeds_;
  torch::Dtype vae_dtype_ = torch::kFloat32;
  AutoencoderKLCogVideoX kept_vae_{nullptr};  // keep_vae = cpu
};

}  // namespace cvx
