// The options of cvx_generate (top-level keys, like the official cli_demo.py).
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/error.h"

namespace cvx {

struct GenerateConfig {
  std::string model_path;
  std::string lora_path;
  double lora_scale = 1.0;
  std::string prompt;
  std::string prompt_file;
  std::string negative_prompt;
  std::string image;
  std::string image_file;
  int64_t num_frames = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_inference_steps = 50;
  double guidance_scale = 6.0;
  bool use_dynamic_cfg = true;
  std::string scheduler = "auto";
  int64_t seed = 42;
  int64_t fps = 0;
  std::string dtype = "bf16";
  std::string output = "output.mp4";
  bool save_frames = false;
  bool vae_tiling = false;
  int64_t sequence_parallel_size = 1;

  template <class V>
  void visit(V& v) {
    v("model_path", model_path,
      "diffusers CogVideoX folder (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)");
    v("lora_path", lora_path, "LoRA file (pytorch_lora_weights.safetensors from cvx or diffusers); empty: none");
    v("lora_scale", lora_scale,
      "multiplier on the LoRA strength it was trained with (cvx files carry it; files without metadata: 1.0, as "
      "diffusers)");
    v("prompt", prompt, "the prompt (or use prompt_file)");
    v("prompt_file", prompt_file, "a file with one prompt per line; every prompt reuses the loaded models");
    v("negative_prompt", negative_prompt, "negative prompt for classifier-free guidance");
    v("image", image, "image-to-video: the first-frame image (PNG/JPEG), used for every prompt");
    v("image_file", image_file, "image-to-video: a file with one image path per line, matching prompt_file");
    v("num_frames", num_frames, "frames to generate, 8N+1 (0: the model's default, 49 or 81)");
    v("height", height, "video height, multiple of 16 (0: 480 for 1.0 models, 768 for 1.5)");
    v("width", width, "video width, multiple of 16 (0: 720 for 1.0 models, 1360 for 1.5)");
    v("num_inference_steps", num_inference_steps, "denoising steps");
    v("guidance_scale", guidance_scale, "classifier-free guidance scale (<= 1 disables guidance)");
    v("use_dynamic_cfg", use_dynamic_cfg, "the cosine guidance schedule of the official demo");
    v.choice("scheduler", scheduler, {"auto", "dpm", "ddim"},
             "sampler: auto = DPM for 5b-class models and DDIM for 2b, as the official demo");
    v("seed", seed, "random seed (CPU generator, reproducible across devices)");
    v("fps", fps, "frame rate of the mp4 (0: 8 for 1.0 models, 16 for 1.5)");
    v.choice("dtype", dtype, {"bf16", "fp16", "fp32"}, "compute dtype of the transformer and text encoder");
    v("output", output, "output mp4; with several prompts, NAME_000.mp4, NAME_001.mp4, ...");
    v("save_frames", save_frames, "also write every frame as PNG into a folder next to the mp4");
    v("vae_tiling", vae_tiling, "decode in overlapping spatial tiles (less memory, slightly different pixels)");
    v("sequence_parallel_size", sequence_parallel_size,
      "ranks that sample one video together, each computing a slice of its tokens (Ulysses; consecutive ranks); "
      "must divide the world size and the attention heads; prompts go to the world / P groups in turn");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, !model_path.empty(), "model_path is required");
    CVX_CHECK_AS(ConfigError, prompt.empty() != prompt_file.empty(), "give exactly one of prompt and prompt_file");
    CVX_CHECK_AS(ConfigError, image.empty() || image_file.empty(), "give at most one of image and image_file");
    CVX_CHECK_AS(ConfigError, num_inference_steps > 0, "num_inference_steps must be > 0");
    CVX_CHECK_AS(ConfigError, fps >= 0, "fps must be >= 0");
    CVX_CHECK_AS(ConfigError, lora_scale >= 0, "lora_scale must be >= 0");
    CVX_CHECK_AS(ConfigError, sequence_parallel_size >= 1, "sequence_parallel_size must be >= 1 (got ",
                 sequence_parallel_size, ")");
  }
};

}  // namespace cvx
