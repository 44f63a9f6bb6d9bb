// AutoencoderKLCogVideoX configuration: the fields of `vae/config.json` with the constructor
// defaults of diffusers 0.32.2, and the released presets (they differ only in the latent scaling).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cvx/model/model_variant.h"

namespace cvx {

struct VAEConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types{4, "CogVideoXDownBlock3D"};
  std::vector<std::string> up_block_types{4, "CogVideoXUpBlock3D"};
  std::vector<int64_t> block_out_channels{128, 256, 256, 512};
  int64_t latent_channels = 16;
  int64_t layers_per_block = 3;
  std::string act_fn = "silu";
  double norm_eps = 1e-6;  // encoder resnet GroupNorms only; every other norm has a fixed 1e-6
  int64_t norm_num_groups = 32;
  int64_t temporal_compression_ratio = 4;
  int64_t sample_height = 480;  // tiling defaults derive from these
  int64_t sample_width = 720;
  double scaling_factor = 1.15258426;
  std::optional<double> shift_factor;               // unused by CogVideoX (null in every release)
  std::optional<std::vector<double>> latents_mean;  // unused by CogVideoX
  std::optional<std::vector<double>> latents_std;   // unused by CogVideoX
  bool force_upcast = true;
  bool use_quant_conv = false;  // must stay false: no CogVideoX VAE has quant convs
  bool use_post_quant_conv = false;
  // CogVideoX 1.5: the I2V pipelines divide the image latent by scaling_factor instead of
  // multiplying it (see scale_image_latents in vae.h). Video latents are unaffected.
  bool invert_scale_latents = false;

  // 2^(number of blocks - 1) = 8 for every release.
  int64_t spatial_compression_ratio() const { return int64_t{1} << (block_out_channels.size() - 1); }
  // log2(temporal_compression_ratio): how many leading down/up blocks also resample time.
  int64_t temporal_compression_levels() const;
  // Latent frames of `frames` pixel frames (1 + (F - 1) / 4 for F = 4k + 1).
  int64_t latent_frames(int64_t frames) const { return (frames - 1) / temporal_compression_ratio + 1; }

  // Throws FormatError naming `source` when the combination is not one the architecture supports.
  void validate(const std::string& source = "vae config") const;
  nlohmann::json to_json() const;
  static VAEConfig from_json(const nlohmann::json& json, const std::string& source = "vae config");
};

// Presets of the released checkpoints (same architecture, different latent scaling) and the shape
// of the golden tiny VAE (block_out_channels [4, 8, 8, 12], 1 layer per block, 4 latent channels,
// 2 groups, sample 32x48).
VAEConfig cogvideox_vae_2b();  // scaling_factor 1.15258426
VAEConfig cogvideox_vae_5b();  // scaling_factor 0.7 (5b and 5b-I2V)
VAEConfig cogvideox15_vae();   // scaling_factor 0.7, invert_scale_latents (1.5 T2V and I2V)
// The VAE shipped with a released variant (model_variant.h).
VAEConfig vae_preset(const std::string& variant);
// The golden tiny shape with the latent scaling of `variant`'s release.
VAEConfig tiny_vae(const std::string& variant = kVariant5b);

}  // namespace cvx
