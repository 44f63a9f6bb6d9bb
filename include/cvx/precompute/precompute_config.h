// [precompute]: the offline job that encodes the dataset into the latent store.
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/error.h"

namespace cvx {

struct PrecomputeConfig {
  bool dry_run = false;
  bool overwrite = false;
  std::string on_bad_sample = "skip";
  int64_t decode_threads = 2;
  std::string latent_dtype = "fp32";
  std::string embedding_dtype = "bf16";
  int64_t text_batch_size = 8;
  double fps = 0;  // frame_sampling = fps: target frame rate (0: 8 for 1.0 models, 16 for 1.5)
  // A clip whose F sampled frames come from fewer distinct frames is too short (a bad sample).
  // 0: F, every training frame a different picture; 1: anything goes, short clips are padded by
  // repeating frames (the official sampler repeats the last frame).
  int64_t min_frames = 0;

  template <class V>
  void visit(V& v) {
    v("dry_run", dry_run, "check the dataset, model and store settings and print the work plan, encode nothing");
    v("overwrite", overwrite, "replace a store made with other settings instead of refusing it");
    v.choice("on_bad_sample", on_bad_sample, {"skip", "fail"},
             "a corrupt, unreadable or too-short video is reported and skipped, or fails the job");
    v("decode_threads", decode_threads, "FFmpeg decoding threads per rank");
    v.choice("latent_dtype", latent_dtype, {"fp32", "bf16"},
             "how the VAE posterior moments are stored (bf16 halves the store, fp32 keeps them exact)");
    v.choice("embedding_dtype", embedding_dtype, {"bf16", "fp32"}, "how the T5 prompt embeddings are stored");
    v("text_batch_size", text_batch_size, "prompts per T5 batch");
    v("fps", fps, "target frame rate of frame_sampling = fps (0: 8 for 1.0 models, 16 for 1.5)");
    v("min_frames", min_frames,
      "distinct source frames a clip must give its F training frames, else it is too short (0: F; 1: pad any "
      "short clip by repeating frames, as the official sampler does)");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, decode_threads > 0, "decode_threads must be > 0 (got ", decode_threads, ")");
    CVX_CHECK_AS(ConfigError, text_batch_size > 0, "text_batch_size must be > 0");
    CVX_CHECK_AS(ConfigError, fps >= 0, "fps must be >= 0");
    CVX_CHECK_AS(ConfigError, min_frames >= 0, "min_frames must be >= 0 (0: the training frame count)");
  }
};

}  // namespace cvx
