// [data]: the dataset (list files), the clip geometry and preprocessing, and the latent store that
// cvx_precompute writes and cvx_train reads. One struct, so one experiment file serves both.
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/error.h"
#include "cvx/data/dataset_lists.h"

namespace cvx {

// Frames x height x width of the training clips, e.g. 49x480x720.
struct Resolution {
  int64_t frames = 0;
  int64_t height = 0;
  int64_t width = 0;
  std::string to_string() const;
};

// Parses "FxHxW"; F must be 8N+1 and H, W multiples of 16 (VAE factor 8 x patch size 2).
// Throws ConfigError naming the value and the nearest valid ones.
Resolution parse_resolution(const std::string& text);

struct DataConfig {
  DatasetListsConfig lists;  // data_root, list files, id_token
  std::string train_resolution = "49x480x720";
  std::string frame_sampling = "stride";  // official rule: stride N // F from the start
  std::string resize_mode = "resize";     // official: straight to HxW
  std::string store;                      // HDF5 latent store

  template <class V>
  void visit(V& v) {
    lists.visit(v);
    v("train_resolution", train_resolution, "clip size FxHxW; F = 8N+1 (49, 81), H and W multiples of 16");
    v.choice("frame_sampling", frame_sampling, {"stride", "spread", "fps"},
             "how F frames are taken from a clip: stride (official, from the start), spread (evenly over the clip), "
             "fps (resample to a target frame rate)");
    v.choice("resize_mode", resize_mode, {"resize", "center_crop", "random_crop"},
             "resize straight to HxW (official), or keep the aspect ratio and crop");
    v("store", store, "HDF5 latent store written by cvx_precompute and read by cvx_train");
  }
  void validate() const;
  Resolution resolution() const { return parse_resolution(train_resolution); }
};

}  // namespace cvx
