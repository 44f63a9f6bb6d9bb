#include "cvx/model/transformer_config.h"

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "cvx/model/model_variant.h"

namespace cvx {

std::string TransformerConfig::variant() const {
  if (patch_size_t) return is_i2v() ? kVariant15I2v : kVariant15T2v;
  if (!use_rotary_positional_embeddings) return kVariant2b;
  return is_i2v() ? kVariant5bI2v : kVariant5b;
}

void TransformerConfig::validate(const std::string& source) const {
  CVX_CHECK_AS(FormatError, num_attention_heads > 0 && attention_head_dim > 0 && num_layers > 0, source,
               ": num_attention_heads, attention_head_dim and num_layers must be positive");
  CVX_CHECK_AS(FormatError, attention_head_dim % 8 == 0 || !use_rotary_positional_embeddings, source,
               ": attention_head_dim ", attention_head_dim, " must be a multiple of 8 for 3D rotary embeddings");
  CVX_CHECK_AS(FormatError, activation_fn == "gelu-approximate", source, ": activation_fn '", activation_fn,
               "' is not supported (CogVideoX uses gelu-approximate)");
  CVX_CHECK_AS(FormatError, timestep_activation_fn == "silu", source, ": timestep_activation_fn '",
               timestep_activation_fn, "' is not supported (CogVideoX uses silu)");
  CVX_CHECK_AS(FormatError, patch_size > 0 && (!patch_size_t || *patch_size_t > 0), source,
               ": patch sizes must be positive");
  CVX_CHECK_AS(FormatError, !(use_learned_positional_embeddings && !use_rotary_positional_embeddings), source,
               ": learned positional embeddings are only used together with rotary embeddings (5b-I2V)");
  CVX_CHECK_AS(FormatError, !ofs_embed_dim || *ofs_embed_dim == time_embed_dim, source, ": ofs_embed_dim ",
               *ofs_embed_dim, " must equal time_embed_dim ", time_embed_dim, " (the two embeddings are added)");
  CVX_CHECK_AS(FormatError, inner_dim() % 2 == 0, source, ": inner dim must be even");
}

// Every field once, in config.json key order: to_json and from_json walk the same list.
template <class Config, class Visitor>
void visit_fields(Config& c, Visitor&& v) {
  v("activation_fn", c.activation_fn);
  v("attention_bias", c.attention_bias);
  v("attention_head_dim", c.attention_head_dim);
  v("dropout", c.dropout);
  v("flip_sin_to_cos", c.flip_sin_to_cos);
  v("freq_shift", c.freq_shift);
  v("in_channels", c.in_channels);
  v("max_text_seq_length", c.max_text_seq_length);
  v("norm_elementwise_affine", c.norm_elementwise_affine);
  v("norm_eps", c.norm_eps);
  v("num_attention_heads", c.num_attention_heads);
  v("num_layers", c.num_layers);
  v("ofs_embed_dim", c.ofs_embed_dim);
  v("out_channels", c.out_channels);
  v("patch_bias", c.patch_bias);
  v("patch_size", c.patch_size);
  v("patch_size_t", c.patch_size_t);
  v("sample_frames", c.sample_frames);
  v("sample_height", c.sample_height);
  v("sample_width", c.sample_width);
  v("spatial_interpolation_scale", c.spatial_interpolation_scale);
  v("temporal_compression_ratio", c.temporal_compression_ratio);
  v("temporal_interpolation_scale", c.temporal_interpolation_scale);
  v("text_embed_dim", c.text_embed_dim);
  v("time_embed_dim", c.time_embed_dim);
  v("timestep_activation_fn", c.timestep_activation_fn);
  v("use_learned_positional_embeddings", c.use_learned_positional_embeddings);
  v("use_rotary_positional_embeddings", c.use_rotary_positional_embeddings);
}

nlohmann::json TransformerConfig::to_json() const {
  return config_to_json(*this, "CogVideoXTransformer3DModel", [](const auto& c, auto&& v) { visit_fields(c, v); });
}

TransformerConfig TransformerConfig::from_json(const nlohmann::json& j, const std::string& source) {
  return config_from_json<TransformerConfig>(j, "CogVideoXTransformer3DModel", source,
                                             [](auto& c, auto&& v) { visit_fields(c, v); });
}

TransformerConfig cogvideox_2b() { return TransformerConfig{}; }

TransformerConfig cogvideox_5b() {
  TransformerConfig c;
  c.num_attention_heads = 48;
  c.num_layers = 42;
  c.use_rotary_positional_embeddings = true;
  return c;
}

TransformerConfig cogvideox_5b_i2v() {
  TransformerConfig c = cogvideox_5b();
  c.in_channels = 32;
  c.use_learned_positional_embeddings = true;
  return c;
}

TransformerConfig cogvideox15_5b() {
  TransformerConfig c = cogvideox_5b();
  c.sample_height = 300;
  c.sample_width = 300;
  c.sample_frames = 81;
  c.patch_size_t = 2;
  c.patch_bias = false;
  return c;
}

TransformerConfig cogvideox15_5b_i2v() {
  TransformerConfig c = cogvideox15_5b();
  c.in_channels = 32;
  c.ofs_embed_dim = 512;
  return c;
}

TransformerConfig transformer_preset(const std::string& variant) {
  check_released_variant(variant);
  if (variant == kVariant2b) return cogvideox_2b();
  if (variant == kVariant5b) return cogvideox_5b();
  if (variant == kVariant5bI2v) return cogvideox_5b_i2v();
  return variant == kVariant15T2v ? cogvideox15_5b() : cogvideox15_5b_i2v();
}

TransformerConfig tiny_transformer(const std::string& variant) {
  TransformerConfig c = transformer_preset(variant);
  // Small enough for a CPU test step in milliseconds, shaped like the real one in every way that
  // matters: several heads, rope-compatible head dim, text length 226, the variant's patching.
  c.num_attention_heads = 2;
  c.attention_head_dim = 16;
  c.num_layers = 2;
  c.in_channels = c.is_i2v() ? 8 : 4;
  c.out_channels = 4;
  c.time_embed_dim = 8;
  c.text_embed_dim = 16;
  if (c.ofs_embed_dim) c.ofs_embed_dim = c.time_embed_dim;
  if (c.patch_size_t) {
    c.sample_height = 12;
    c.sample_width = 20;
    c.sample_frames = 13;
  } else {
    c.sample_height = 6;
    c.sample_width = 8;
    c.sample_frames = 9;
  }
  return c;
}

}  // namespace cvx
