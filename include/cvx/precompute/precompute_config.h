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

  template <class V>
  void visit(V& v) {
    v("dry_run", dry_run, "check the dataset, model and store settings and print the work plan, encode nothing");
    v("overwrite", overwrite, "replace a store made with other settings instead of refusing it");
    v.choice("on_bad_sample", on_bad_sample, {"skip", "fail"},
             "a corrupt, unreadable or too-short video is reported and skipped, or fails the job");
    v("decode_threads", decode_threads, "FFmpeg decoding threads per rank");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, decode_threads > 0, "decode_threads must be > 0 (got ", decode_threads, ")");
  }
};

}  // namespace cvx
