// CogVideoXTransformer3DModel configuration: the fields of `transformer/config.json`, with the
// constructor defaults diffusers applies to keys older checkpoints omit, and the released presets.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cvx/model/model_variant.h"

namespace cvx {

struct TransformerConfig {
  int64_t num_attention_heads = 30;
  int64_t attention_head_dim = 64;
  int64_t in_channels = 16;
  int64_t out_channels = 16;
  bool flip_sin_to_cos = true;
  int64_t freq_shift = 0;
  int64_t time_embed_dim = 512;
  std::optional<int64_t> ofs_embed_dim;  // 1.5-I2V only
  int64_t text_embed_dim = 4096;
  int64_t num_layers = 30;
  double dropout = 0.0;
  bool attention_bias = true;
  int64_t sample_width = 90;
  int64_t sample_height = 60;
  int64_t sample_frames = 49;
  int64_t patch_size = 2;
  std::optional<int64_t> patch_size_t;  // 1.5: 2
  int64_t temporal_compression_ratio = 4;
  int64_t max_text_seq_length = kMaxTextLength;
  std::string activation_fn = "gelu-approximate";
  std::string timestep_activation_fn = "silu";
  bool norm_elementwise_affine = true;
  double norm_eps = 1e-5;
  double spatial_interpolation_scale = 1.875;
  double temporal_interpolation_scale = 1.0;
  bool use_rotary_positional_embeddings = false;
  bool use_learned_positional_embeddings = false;
  bool patch_bias = true;

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  // The released variant (model_variant.h) this config is shaped like.
  std::string variant() const;
  bool is_i2v() const { return in_channels == 2 * out_channels; }
  // Throws FormatError naming `source` when the combination is not one the architecture supports.
  void validate(const std::string& source = "transformer config") const;
  nlohmann::json to_json() const;
  static TransformerConfig from_json(const nlohmann::json& json, const std::string& source = "transformer config");
};

// Presets of the released checkpoints and a tiny random-model shape for tests and demos.
TransformerConfig cogvideox_2b();
TransformerConfig cogvideox_5b();
TransformerConfig cogvideox_5b_i2v();
TransformerConfig cogvideox15_5b();
TransformerConfig cogvideox15_5b_i2v();
// variant: a released one (model_variant.h); small widths, 2 layers.
TransformerConfig tiny_transformer(const std::string& variant);
TransformerConfig transformer_preset(const std::string& variant);

}  // namespace cvx
