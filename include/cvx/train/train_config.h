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
      "checkpoint folder to resume from, or 'latest' for the newest in output_dir; a missing path is an error");
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

struct ValidationConfig {
  bool enabled = false;
  int64_t every_steps = 0;  // 0: only at the end
  std::string data_root;    // same list format as the training set
  std::string caption_column = "prompts.txt";
  std::string image_column;
  int64_t num_inference_steps = 50;
  double guidance_scale = 6.0;
  bool use_dynamic_cfg = false;
  int64_t fps = 16;

  template <class V>
  void visit(V& v) {
    v("enabled", enabled, "render validation videos during training");
    v("every_steps", every_steps, "render every this many optimizer steps (0 = only at the end)");
    v("data_root", data_root, "validation set folder (same list format as the training set)");
    v("caption_column", caption_column, "validation prompt list, relative to data_root");
    v("image_column", image_column, "validation image list for I2V, relative to data_root");
    v("num_inference_steps", num_inference_steps, "denoising steps per validation video");
    v("guidance_scale", guidance_scale, "classifier-free guidance scale");
    v("use_dynamic_cfg", use_dynamic_cfg, "cosine-ramped guidance as in cli_demo");
    v("fps", fps, "frame rate of the written mp4");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, !enabled || !data_root.empty(), "enabled = true needs data_root (the validation set)");
    CVX_CHECK_AS(ConfigError, every_steps >= 0, "every_steps must be >= 0");
    CVX_CHECK_AS(ConfigError, num_inference_steps > 0, "num_inference_steps must be > 0");
    CVX_CHECK_AS(ConfigError, fps > 0, "fps must be > 0");
  }
};

}  // namespace cvx
