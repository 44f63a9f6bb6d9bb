// [train], [validation] and the general options of cvx_train. Defaults follow the official CogVideo
// fine-tuning scheme where it has one (see shared spec finetune.md).
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/error.h"

namespace cvx {

struct TrainConfig {
  bool dry_run = false;
  std::string output_dir = "runs/cvx";
  std::string training_type = "lora";
  int64_t seed = 42;
  int64_t train_epochs = 10;
  int64_t train_steps = 0;  // 0: train_epochs x steps per epoch
  int64_t batch_size = 1;   // per rank
  int64_t gradient_accumulation_steps = 1;
  std::string mixed_precision = "bf16";
  double learning_rate = 2e-5;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double epsilon = 1e-8;
  double weight_decay = 1e-4;
  double max_grad_norm = 1.0;
  std::string lr_scheduler = "constant_with_warmup";
  int64_t lr_warmup_steps = 100;
  int64_t lr_num_cycles = 1;
  double lr_power = 1.0;
  bool gradient_checkpointing = true;
  int64_t checkpointing_steps = 200;
  int64_t checkpointing_limit = 10;
  std::string resume_from_checkpoint;
  std::string optimizer = "adamw";
  std::string latent_sampling = "sample";   // draw from the stored posterior every step, or take its mean
  std::string image_latents = "encode";     // I2V: noise + VAE-encode the first frame every step (official)
  std::string image_latent_scale = "auto";  // auto: as cvx_generate / diffusers feed it when sampling
  double noised_image_dropout = 0.0;
  bool enable_tiling = true;   // I2V encode: the VAE encoder tiles large frames (official default)
  bool enable_slicing = true;  // I2V encode: one image of the batch at a time (official default)
  bool precompute_if_missing = false;
  int64_t prefetch_batches = 2;
  double peak_tflops = 0;  // 0: the device's bf16 dense peak when known (MFU), else no MFU
  std::string export_dtype = "bf16";
  std::string export_pipeline;
  bool plot_metrics = true;

  template <class V>
  void visit(V& v) {
    v("dry_run", dry_run, "check the configuration, open the run folder and print the plan, train nothing");
    v("output_dir", output_dir, "run folder: resolved config, logs, checkpoints, LoRA exports, validation videos");
    v.choice("training_type", training_type, {"lora", "sft"}, "LoRA adapters or full fine-tuning of the transformer");
    v("seed", seed, "random seed (noise, timesteps, data order); same seed and world size reproduce a run");
    v("train_epochs", train_epochs, "passes over the dataset (used when train_steps is 0)");
    v("train_steps", train_steps, "optimizer steps; 0 = train_epochs x steps per epoch");
    v("batch_size", batch_size, "samples per rank per micro-step");
    v("gradient_accumulation_steps", gradient_accumulation_steps, "micro-steps per optimizer step");
    v.choice("mixed_precision", mixed_precision, {"bf16", "fp16", "no"}, "compute dtype (fp16 only sensible for 2b)");
    v("learning_rate", learning_rate, "peak learning rate");
    v("beta1", beta1, "AdamW beta1");
    v("beta2", beta2, "AdamW beta2");
    v("epsilon", epsilon, "AdamW epsilon");
    v("weight_decay", weight_decay, "AdamW decoupled weight decay");
    v("max_grad_norm", max_grad_norm, "clip the global gradient norm to this (0 = no clipping)");
    v.choice("lr_scheduler", lr_scheduler,
             {"constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"},
             "learning-rate schedule over optimizer steps");
    v("lr_warmup_steps", lr_warmup_steps, "linear warm-up steps");
    v("lr_num_cycles", lr_num_cycles, "cycles of cosine_with_restarts");
    v("lr_power", lr_power, "power of the polynomial schedule");
    v("gradient_checkpointing", gradient_checkpointing, "recompute transformer blocks in backward to save memory");
    v("checkpointing_steps", checkpointing_steps, "save a resumable checkpoint every this many optimizer steps");
    v("checkpointing_limit", checkpointing_limit, "keep at most this many checkpoints (oldest removed; 0 = all)");
    v("resume_from_checkpoint", resume_from_checkpoint,
      "checkpoint folder to resume from, 'latest' for the newest in output_dir (its files must verify), or "
      "'latest_valid' for the newest whose files verify; a missing path is an error");
    v.choice("optimizer", optimizer, {"adamw"}, "optimizer (sharded AdamW, torch.optim.AdamW's arithmetic)");
    v.choice("latent_sampling", latent_sampling, {"sample", "mean"},
             "video latents: a fresh draw from the stored VAE posterior every step (sample), or its mean");
    v.choice("image_latents", image_latents, {"encode", "cached"},
             "I2V: noise the first-frame image and VAE-encode it every step as the official trainer does (encode; "
             "keeps the VAE encoder resident), or use the store's clean first-frame latents (cached; no VAE, less "
             "memory, deviates from the recipe)");
    v.choice("image_latent_scale", image_latent_scale, {"auto", "multiply", "divide"},
             "I2V image latents: multiply by the VAE scaling factor or divide by it; auto = what cvx_generate and "
             "diffusers feed when sampling (divide for models whose VAE has invert_scale_latents, i.e. 1.5-I2V; "
             "the official trainer always multiplies)");
    v("noised_image_dropout", noised_image_dropout,
      "I2V: probability that a sample's image latents are zeroed (image-condition dropout; official: 0)");
    v("enable_tiling", enable_tiling,
      "I2V encode: the VAE encoder cuts frames larger than half its sample size into overlapping tiles "
      "(diffusers' enable_tiling; the official trainer's default; bounds the encode's memory at 768x1360)");
    v("enable_slicing", enable_slicing,
      "I2V encode: encode the batch's images one at a time (same result, less memory; official default)");
    v("precompute_if_missing", precompute_if_missing,
      "run the precompute (same config) when [data] store does not exist, instead of failing");
    v("prefetch_batches", prefetch_batches, "batches a reader thread reads ahead of the step");
    v("peak_tflops", peak_tflops,
      "peak dense TFLOP/s of one device, for the MFU column (0: the device's bf16 datasheet peak when known)");
    v.choice("export_dtype", export_dtype, {"bf16", "fp16", "fp32"},
             "dtype of the exported full fine-tune (transformer/ folder) and LoRA file");
    v("export_pipeline", export_pipeline,
      "also write a complete diffusers pipeline folder here: the trained transformer beside links to the base "
      "model's other components");
    v("plot_metrics", plot_metrics,
      "after each checkpoint, redraw output_dir/loss.png (loss, lr, grad norm, throughput) from metrics.jsonl "
      "with tools/plot_metrics in a background python3 process (needs python3-matplotlib; a failure only warns)");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, !output_dir.empty(), "output_dir must not be empty");
    CVX_CHECK_AS(ConfigError, train_epochs > 0 || train_steps > 0, "set train_steps > 0 or train_epochs > 0");
    CVX_CHECK_AS(ConfigError, train_steps >= 0, "train_steps must be >= 0 (got ", train_steps, ")");
    CVX_CHECK_AS(ConfigError, batch_size > 0, "batch_size must be > 0 (got ", batch_size, ")");
    CVX_CHECK_AS(ConfigError, gradient_accumulation_steps > 0, "gradient_accumulation_steps must be > 0 (got ",
                 gradient_accumulation_steps, ")");
    CVX_CHECK_AS(ConfigError, learning_rate > 0, "learning_rate must be > 0 (got ", learning_rate, ")");
    CVX_CHECK_AS(ConfigError, beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "beta1 and beta2 must be in [0, 1)");
    CVX_CHECK_AS(ConfigError, epsilon > 0, "epsilon must be > 0 (got ", epsilon, ")");
    CVX_CHECK_AS(ConfigError, weight_decay >= 0, "weight_decay must be >= 0 (got ", weight_decay, ")");
    CVX_CHECK_AS(ConfigError, max_grad_norm >= 0, "max_grad_norm must be >= 0 (got ", max_grad_norm, ")");
    CVX_CHECK_AS(ConfigError, lr_warmup_steps >= 0, "lr_warmup_steps must be >= 0");
    CVX_CHECK_AS(ConfigError, lr_num_cycles > 0, "lr_num_cycles must be > 0");
    CVX_CHECK_AS(ConfigError, checkpointing_steps > 0, "checkpointing_steps must be > 0 (got ", checkpointing_steps,
                 ")");
    CVX_CHECK_AS(ConfigError, checkpointing_limit >= 0, "checkpointing_limit must be >= 0");
    CVX_CHECK_AS(ConfigError, noised_image_dropout >= 0 && noised_image_dropout < 1,
                 "noised_image_dropout must be in [0, 1) (got ", noised_image_dropout, ")");
    CVX_CHECK_AS(ConfigError, prefetch_batches >= 0, "prefetch_batches must be >= 0 (got ", prefetch_batches, ")");
    CVX_CHECK_AS(ConfigError, peak_tflops >= 0, "peak_tflops must be >= 0 (got ", peak_tflops, ")");
  }
};

// [validation]: videos rendered with the model being trained. The official trainer's options map
// to: do_validation = enabled, validation_steps = every_steps, validation_dir = dir,
// validation_prompts / validation_images = prompts / images (":::"-separated), gen_fps = fps.
struct ValidationConfig {
  bool enabled = false;
  int64_t every_steps = 0;  // 0: only at the end
  std::string dir;          // prompts.txt [+ images.txt] in the dataset format
  std::string caption_column = "prompts.txt";
  std::string image_column = "images.txt";
  std::string prompts;  // instead of dir: prompts separated by ":::"
  std::string images;   // I2V, with prompts: image paths separated by ":::"
  std::string negative_prompt;
  int64_t num_frames = 0, height = 0, width = 0;  // 0: the training resolution
  int64_t num_inference_steps = 50;
  double guidance_scale = 6.0;
  bool use_dynamic_cfg = false;
  std::string scheduler = "dpm";
  int64_t seed = 42;
  int64_t fps = 0;  // 0: 8 for 1.0 models, 16 for 1.5
  bool vae_tiling = true;
  bool vae_slicing = true;
  std::string keep_vae = "free";
  int64_t contact_sheet_height = 160;

  template <class V>
  void visit(V& v) {
    v("enabled", enabled, "render validation videos during training (official: do_validation)");
    v("every_steps", every_steps,
      "render every this many optimizer steps, and always after the last step (0 = only at the end; official: "
      "validation_steps)");
    v("dir", dir,
      "validation set folder: caption_column (one prompt a line) and, for I2V, image_column (official: "
      "validation_dir)");
    v("caption_column", caption_column, "prompt list in dir");
    v("image_column", image_column, "I2V: image list in dir (paths relative to the list file)");
    v("prompts", prompts, "instead of dir: the prompts separated by ':::' (official: validation_prompts)");
    v("images", images, "I2V, with prompts: the first-frame images separated by ':::' (official: validation_images)");
    v("negative_prompt", negative_prompt, "negative prompt of classifier-free guidance (official: empty)");
    v("num_frames", num_frames, "frames per video, 4N+1 (0: the training clips' frame count)");
    v("height", height, "video height, multiple of 16 (0: the training height)");
    v("width", width, "video width, multiple of 16 (0: the training width)");
    v("num_inference_steps", num_inference_steps, "denoising steps per validation video");
    v("guidance_scale", guidance_scale, "classifier-free guidance scale (<= 1 disables guidance)");
    v("use_dynamic_cfg", use_dynamic_cfg, "the cosine guidance schedule of cli_demo (official validation: off)");
    v.choice("scheduler", scheduler, {"dpm", "ddim", "auto"},
             "sampler, trailing spacing (official validation: the training scheduler, DPM; auto = DPM for "
             "5b-class models and DDIM for 2b as cvx_generate)");
    v("seed", seed, "seed of every validation video (the same at every step, so the videos compare)");
    v("fps", fps, "frame rate of the mp4 (0: 8 for 1.0 models, 16 for 1.5; official gen_fps: 15)");
    v("vae_tiling", vae_tiling, "decode in overlapping spatial tiles (bounds the decode's memory)");
    v("vae_slicing", vae_slicing, "decode the batch one video at a time");
    v.choice("keep_vae", keep_vae, {"free", "cpu"},
             "the VAE between validations: free (read from disk for each validation, freed afterwards) or cpu "
             "(kept in host memory, moved to the device for the validation)");
    v("contact_sheet_height", contact_sheet_height,
      "height of the frames in contact_sheet.png (first, middle, last frame per prompt; smaller frames are "
      "kept as they are)");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, !enabled || !dir.empty() || !prompts.empty(),
                 "[validation] enabled = true needs the validation prompts: dir = FOLDER (with ", caption_column,
                 ") or prompts = \"first prompt:::second prompt\"");
    CVX_CHECK_AS(ConfigError, dir.empty() || prompts.empty(),
                 "[validation] give the prompts once: dir or prompts, not both");
    CVX_CHECK_AS(ConfigError, images.empty() || !prompts.empty(),
                 "[validation] images goes with prompts (with dir, the images come from dir/", image_column, ")");
    CVX_CHECK_AS(ConfigError, every_steps >= 0, "[validation] every_steps must be >= 0");
    CVX_CHECK_AS(ConfigError, num_frames >= 0 && height >= 0 && width >= 0,
                 "[validation] num_frames, height and width must be >= 0 (0: the training resolution)");
    CVX_CHECK_AS(ConfigError, num_inference_steps > 0, "[validation] num_inference_steps must be > 0");
    CVX_CHECK_AS(ConfigError, fps >= 0, "[validation] fps must be >= 0");
    CVX_CHECK_AS(ConfigError, contact_sheet_height > 0, "[validation] contact_sheet_height must be > 0");
  }
};

}  // namespace cvx
