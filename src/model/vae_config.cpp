#include "cvx/model/vae_config.h"

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "cvx/model/model_variant.h"

namespace cvx {

int64_t VAEConfig::temporal_compression_levels() const {
  int64_t levels = 0;
  while ((int64_t{1} << levels) < temporal_compression_ratio) ++levels;
  return levels;
}

void VAEConfig::validate(const std::string& source) const {
  const size_t blocks = block_out_channels.size();
  CVX_CHECK_AS(FormatError, blocks >= 1, source, ": block_out_channels must not be empty");
  CVX_CHECK_AS(FormatError, down_block_types.size() == blocks && up_block_types.size() == blocks, source,
               ": down_block_types (", down_block_types.size(), ") and up_block_types (", up_block_types.size(),
               ") must have one entry per block_out_channels entry (", blocks, ")");
  for (const auto& type : down_block_types)
    CVX_CHECK_AS(FormatError, type == "CogVideoXDownBlock3D", source, ": down block type ", quote(type),
                 " is not supported (expected \"CogVideoXDownBlock3D\")");
  for (const auto& type : up_block_types)
    CVX_CHECK_AS(FormatError, type == "CogVideoXUpBlock3D", source, ": up block type ", quote(type),
                 " is not supported (expected \"CogVideoXUpBlock3D\")");
  CVX_CHECK_AS(FormatError, norm_num_groups > 0, source, ": norm_num_groups must be positive");
  for (const int64_t channels : block_out_channels)
    CVX_CHECK_AS(FormatError, channels > 0 && channels % norm_num_groups == 0, source, ": block_out_channels entry ",
                 channels, " is not a positive multiple of norm_num_groups ", norm_num_groups);
  CVX_CHECK_AS(FormatError, in_channels > 0 && out_channels > 0 && latent_channels > 0 && layers_per_block > 0, source,
               ": in_channels, out_channels, latent_channels and layers_per_block must be positive");
  CVX_CHECK_AS(FormatError, act_fn == "silu" || act_fn == "swish", source, ": act_fn ", quote(act_fn),
               " is not supported (CogVideoX uses silu)");
  CVX_CHECK_AS(
      FormatError,
      temporal_compression_ratio >= 1 && (int64_t{1} << temporal_compression_levels()) == temporal_compression_ratio,
      source, ": temporal_compression_ratio ", temporal_compression_ratio, " must be a power of two");
  CVX_CHECK_AS(FormatError, temporal_compression_levels() < static_cast<int64_t>(blocks), source,
               ": temporal_compression_ratio ", temporal_compression_ratio, " needs more than ", blocks - 1,
               " resampling blocks");
  CVX_CHECK_AS(FormatError, !use_quant_conv && !use_post_quant_conv, source,
               ": use_quant_conv / use_post_quant_conv are not supported (no CogVideoX VAE has them)");
  CVX_CHECK_AS(FormatError, scaling_factor > 0, source, ": scaling_factor must be positive, got ", scaling_factor);
  CVX_CHECK_AS(FormatError, sample_height > 0 && sample_width > 0, source, ": sample_height/width must be positive");
}

namespace {
// Every field once, in config.json key order: to_json and from_json walk the same list.
template <class Config, class Visitor>
void visit_fields(Config& c, Visitor&& v) {
  v("act_fn", c.act_fn);
  v("block_out_channels", c.block_out_channels);
  v("down_block_types", c.down_block_types);
  v("force_upcast", c.force_upcast);
  v("in_channels", c.in_channels);
  v("invert_scale_latents", c.invert_scale_latents);
  v("latent_channels", c.latent_channels);
  v("latents_mean", c.latents_mean);
  v("latents_std", c.latents_std);
  v("layers_per_block", c.layers_per_block);
  v("norm_eps", c.norm_eps);
  v("norm_num_groups", c.norm_num_groups);
  v("out_channels", c.out_channels);
  v("sample_height", c.sample_height);
  v("sample_width", c.sample_width);
  v("scaling_factor", c.scaling_factor);
  v("shift_factor", c.shift_factor);
  v("temporal_compression_ratio", c.temporal_compression_ratio);
  v("up_block_types", c.up_block_types);
  v("use_post_quant_conv", c.use_post_quant_conv);
  v("use_quant_conv", c.use_quant_conv);
}
}  // namespace

nlohmann::json VAEConfig::to_json() const {
  return config_to_json(*this, "AutoencoderKLCogVideoX", [](const auto& c, auto&& v) { visit_fields(c, v); });
}

VAEConfig VAEConfig::from_json(const nlohmann::json& j, const std::string& source) {
  return config_from_json<VAEConfig>(j, "AutoencoderKLCogVideoX", source,
                                     [](auto& c, auto&& v) { visit_fields(c, v); });
}

VAEConfig cogvideox_vae_2b() { return VAEConfig{}; }

VAEConfig cogvideox_vae_5b() {
  VAEConfig c;
  c.scaling_factor = 0.7;
  return c;
}

VAEConfig cogvideox15_vae() {
  VAEConfig c = cogvideox_vae_5b();
  c.invert_scale_latents = true;
  return c;
}

VAEConfig vae_preset(const std::string& variant) {
  check_released_variant(variant);
  if (variant == kVariant2b) return cogvideox_vae_2b();
  return is_cogvideox15_variant(variant) ? cogvideox15_vae() : cogvideox_vae_5b();
}

VAEConfig tiny_vae(const std::string& variant) {
  VAEConfig c = vae_preset(variant);
  // The golden tiny VAE: every structural feature of the released one (4 blocks, 2 temporal
  // levels, channel changes with shortcuts, group norms with several groups) at widths of 4-12.
  c.block_out_channels = {4, 8, 8, 12};
  c.layers_per_block = 1;
  c.latent_channels = 4;
  c.norm_num_groups = 2;
  c.sample_height = 32;
  c.sample_width = 48;
  return c;
}

}  // namespace cvx
