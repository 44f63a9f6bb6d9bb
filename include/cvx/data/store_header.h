// StoreHeader: what a latent store's latents were made from and how. One function derives the
// header a (model, data) configuration implies, from the model folder's config.json files alone, so
// cvx_precompute writes exactly what cvx_train expects and the trainer can refuse a stale store
// before it loads any weights.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"

namespace cvx {

// The store layout this cvx writes and reads (see latent_store.h).
// 2: I2V stores hold the conditioning images (/images/pixels).
constexpr int64_t kStoreFormatVersion = 2;

// LatentStore::check_compatible() compares everything but format_version (checked on open),
// model_path (a moved model folder is the same model: the fingerprint decides) and cvx_version.
struct StoreHeader {
  int64_t format_version = kStoreFormatVersion;
  std::string model_path;
  std::string model_fingerprint;  // model_fingerprint() of the model folder
  std::string variant;            // TransformerConfig::variant(): a released variant (model_variant.h)
  int64_t frames = 0, height = 0, width = 0;
  std::array<int64_t, 4> latent_shape{0, 0, 0, 0};  // C, F', H', W'
  std::string frame_sampling;
  std::string resize_mode;
  double vae_scaling_factor = 0;
  bool invert_scale_latents = false;
  int64_t max_text_length = 0;
  int64_t text_embed_dim = 0;
  std::string cvx_version = CVX_VERSION;
};

// The one list of header fields: writing, reading, comparing and printing all visit it, in this
// order. `v(name, field)` for fields of type std::string, int64_t, bool, double, std::array<int64_t, 4>.
template <class Header, class Visitor>
void visit_store_header(Header& h, Visitor&& v) {
  v("format_version", h.format_version);
  v("model_path", h.model_path);
  v("model_fingerprint", h.model_fingerprint);
  v("variant", h.variant);
  v("frames", h.frames);
  v("height", h.height);
  v("width", h.width);
  v("latent_shape", h.latent_shape);
  v("frame_sampling", h.frame_sampling);
  v("resize_mode", h.resize_mode);
  v("vae_scaling_factor", h.vae_scaling_factor);
  v("invert_scale_latents", h.invert_scale_latents);
  v("max_text_length", h.max_text_length);
  v("text_embed_dim", h.text_embed_dim);
  v("cvx_version", h.cvx_version);
}

// (name, value as text) of every field, in visit order: strings quoted, doubles with 17 digits.
std::vector<std::pair<std::string, std::string>> store_header_fields(const StoreHeader& header);

// "height: stored 32, <other_name> 64; frame_sampling: ..." for every compared field (all but
// format_version, model_path and cvx_version) that differs; empty when the headers are compatible.
std::string store_header_differences(const StoreHeader& stored, const StoreHeader& other,
                                     const std::string& other_name);

// Identifies the encoders: a hash of vae/config.json, text_encoder/config.json and
// tokenizer/tokenizer_config.json (those present), so a store made with other VAE / T5 configs is
// refused.
std::string model_fingerprint(const std::filesystem::path& model_folder);

// The header of a store made for `model` and `data`: reads vae/config.json, text_encoder/config.json
// and transformer/config.json (no weights). ConfigError / FormatError naming the file when one is
// missing or malformed; ConfigError for an invalid [data] train_resolution.
StoreHeader expected_store_header(const ModelConfig& model, const DataConfig& data);

}  // namespace cvx
