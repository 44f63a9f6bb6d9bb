// AutoencoderKLCogVideoX, the CogVideoX 3D causal VAE, as diffusers 0.32.2 runs it: time is processed
// in frame batches (8 pixel frames per encoder call, 2 latent frames per decoder call, the first batch
// absorbing the remainder) with every causal conv handing its last input frames to the next batch,
// and optionally in overlapping spatial tiles. GroupNorm statistics are taken per frame batch, so
// the batching is part of the numerics, not only a memory measure.
// Module names mirror the checkpoint keys one to one (`encoder.down_blocks.0.resnets.0.conv1.conv.weight`),
// so loading is a strict by-name copy. The VAE is frozen: encode and decode run without autograd.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cvx/model/module_init.h"
#include "cvx/model/vae_config.h"

namespace cvx {

struct CausalConv3dImpl;
// The causal context each CausalConv3d hands from one frame batch to the next: its last kt - 1
// input frames. Empty at the start of every encode, decode and tile (the first frame is replicated).
using ConvCache = std::unordered_map<const CausalConv3dImpl*, torch::Tensor>;

// The frame batches [start, end) of diffusers' frame-batched encode/decode of `frames` frames in
// batches of `batch_size`: the first batch absorbs the remainder (49 frames by 8: [0,9) [9,17) ...).
std::vector<std::pair<int64_t, int64_t>> frame_batches(int64_t frames, int64_t batch_size);

// CogVideoXSafeConv3d (`conv_shortcut`, and `conv` inside every causal conv): a Conv3d with spatial
// zero padding that, like diffusers, splits inputs it estimates above 2 GiB along time.
struct SafeConv3dImpl : torch::nn::Conv3dImpl {
  SafeConv3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t spatial_padding,
                 const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, T, H, W] -> [B, C', T - kt + 1, H, W]
  int64_t spatial_padding;
};
TORCH_MODULE(SafeConv3d);

// CogVideoXCausalConv3d: stride 1, "same" in H/W, causal in T (context = the cached frames of the
// previous batch, else the first frame repeated).
struct CausalConv3dImpl : torch::nn::Module {
  CausalConv3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x, ConvCache& cache);  // [B, C, T, H, W] -> [B, C', T, H, W]
  int64_t time_kernel;
  SafeConv3d conv{nullptr};
};
TORCH_MODULE(CausalConv3d);

// CogVideoXSpatialNorm3D (decoder): GroupNorm(f) * conv_y(zq') + conv_b(zq'), zq' = the latent
// batch resized (nearest) to f's frames and size, its first frame kept apart when f's frame count is odd.
struct SpatialNorm3DImpl : torch::nn::Module {
  SpatialNorm3DImpl(int64_t channels, int64_t latent_channels, int64_t groups, const ModuleInit& init = {});
  // f [B, C, T, H, W], zq [B, Cz, t, h, w] -> [B, C, T, H, W]
  torch::Tensor forward(const torch::Tensor& f, const torch::Tensor& zq, ConvCache& cache);
  torch::nn::GroupNorm norm_layer{nullptr};
  CausalConv3d conv_y{nullptr}, conv_b{nullptr};
};
TORCH_MODULE(SpatialNorm3D);

// CogVideoXResnetBlock3D: GroupNorm (encoder) or SpatialNorm3D (decoder, latent_channels > 0) norms,
// causal 3x3x3 convs, 1x1x1 conv shortcut when the channel count changes.
struct ResnetBlock3DImpl : torch::nn::Module {
  ResnetBlock3DImpl(int64_t in_channels, int64_t out_channels, int64_t groups, double eps, int64_t latent_channels,
                    const ModuleInit& init = {});
  // x [B, Cin, T, H, W], zq: latent batch (decoder) or undefined -> [B, Cout, T, H, W]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache);
  torch::nn::GroupNorm group_norm1{nullptr}, group_norm2{nullptr};  // encoder `norm1`, `norm2`
  SpatialNorm3D spatial_norm1{nullptr}, spatial_norm2{nullptr};     // decoder `norm1`, `norm2`
  CausalConv3d conv1{nullptr}, conv2{nullptr};
  SafeConv3d conv_shortcut{nullptr};

 private:
  torch::Tensor norm(int index, const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache);
};
TORCH_MODULE(ResnetBlock3D);

// CogVideoXDownsample3D (`downsamplers.0`): optional 2x average pooling in time (an odd first frame
// is kept apart), then a per-frame 3x3 stride-2 conv after zero padding right and bottom.
struct Downsample3DImpl : torch::nn::Module {
  Downsample3DImpl(int64_t channels, bool compress_time, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, T, H, W] -> [B, C, T', H/2, W/2]
  bool compress_time;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample3D);

// CogVideoXUpsample3D (`upsamplers.0`): nearest 2x in H/W and, with compress_time, in time (an odd
// first frame stays single: T -> 2T - 1), then a per-frame 3x3 conv.
struct Upsample3DImpl : torch::nn::Module {
  Upsample3DImpl(int64_t channels, bool compress_time, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, C, T, H, W] -> [B, C, T', 2H, 2W]
  bool compress_time;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample3D);

// `down_blocks.{i}`, `mid_block` and `up_blocks.{i}`: resnets in order, then the optional resampler
// (`downsamplers.0` or `upsamplers.0`).
struct VAEBlockImpl : torch::nn::Module {
  enum class Resample { none, down, up };
  VAEBlockImpl(int64_t in_channels, int64_t out_channels, int64_t num_resnets, int64_t groups, double eps,
               int64_t latent_channels, Resample resample, bool compress_time, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache);
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(VAEBlock);

// CogVideoXEncoder3D (`encoder`).
struct VAEEncoderImpl : torch::nn::Module {
  explicit VAEEncoderImpl(const VAEConfig& config, const ModuleInit& init = {});
  // One frame batch: [B, 3, T, H, W] -> moments [B, 2 * latent_channels, T', H/8, W/8]
  torch::Tensor forward(const torch::Tensor& x, ConvCache& cache);
  CausalConv3d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VAEBlock mid_block{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(VAEEncoder);

// CogVideoXDecoder3D (`decoder`); every spatial norm is conditioned on the latent batch of the call.
struct VAEDecoderImpl : torch::nn::Module {
  explicit VAEDecoderImpl(const VAEConfig& config, const ModuleInit& init = {});
  // One latent batch: [B, latent_channels, t, h, w] -> [B, 3, T, 8h, 8w]
  torch::Tensor forward(const torch::Tensor& z, ConvCache& cache);
  CausalConv3d conv_in{nullptr}, conv_out{nullptr};
  VAEBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  SpatialNorm3D norm_out{nullptr};
};
TORCH_MODULE(VAEDecoder);

// DiagonalGaussianDistribution over the latents. All tensors [B, C, F', H', W'].
struct LatentDistribution {
  torch::Tensor mean, logvar;  // logvar clamped to [-30, 20]
  // moments [B, 2C, F', H', W'] = [mean | logvar] along channels (the raw encoder output)
  static LatentDistribution from_moments(const torch::Tensor& moments);
  torch::Tensor std() const;                             // exp(0.5 * logvar)
  torch::Tensor sample(const torch::Tensor& eps) const;  // mean + std * eps
  // eps drawn like diffusers' randn_tensor: on the generator's device, in the latents' dtype.
  torch::Tensor sample(at::Generator generator) const;
  torch::Tensor sample(uint64_t seed) const;  // from a fresh CPU generator seeded with `seed`
  torch::Tensor mode() const { return mean; }
};

// diffusers' enable_tiling state. Tiles are cut in pixels for encode, in latents for decode.
struct VAETiling {
  int64_t sample_min_height = 240, sample_min_width = 360;  // config sample size / 2
  int64_t latent_min_height = 30, latent_min_width = 45;    // int(sample_min / spatial compression)
  double overlap_factor_height = 1.0 / 6, overlap_factor_width = 1.0 / 5;
};

// One tiled pass: tiles of `tile` input units every `stride`; neighbours blended over `blend`
// output units, `keep` output units kept per tile (diffusers' overlap, blend_extent, row_limit).
struct TileGeometry {
  int64_t tile_height, tile_width, stride_height, stride_width;
  int64_t blend_height, blend_width, keep_height, keep_width;
};

class AutoencoderKLCogVideoXImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLCogVideoXImpl(const VAEConfig& config, const ModuleInit& init = {});

  // video [B, 3, F, H, W] in [-1, 1] -> latent distribution [B, C, F', H/8, W/8]
  LatentDistribution encode(const torch::Tensor& video);
  // The raw encoder output [B, 2C, F', H/8, W/8] that encode() splits into mean and logvar.
  torch::Tensor encode_moments(const torch::Tensor& video);
  // latents [B, C, F', h, w] (unscaled: see unscale_latents) -> video [B, 3, F, 8h, 8w], ~[-1, 1], not clamped
  torch::Tensor decode(const torch::Tensor& latents);
  // encode -> sample (with `generator`) or mode -> decode, no scaling.
  torch::Tensor forward(const torch::Tensor& video, bool sample_posterior = false,
                        std::optional<at::Generator> generator = std::nullopt);

  // diffusers' enable_tiling: each given, non-zero value replaces the current one; the latent tile
  // minima follow the sample minima. Inputs not larger than a tile keep the untiled path.
  void enable_tiling(std::optional<int64_t> tile_sample_min_height = std::nullopt,
                     std::optional<int64_t> tile_sample_min_width = std::nullopt,
                     std::optional<double> tile_overlap_factor_height = std::nullopt,
                     std::optional<double> tile_overlap_factor_width = std::nullopt);
  void disable_tiling() { use_tiling_ = false; }
  bool tiling_enabled() const { return use_tiling_; }
  const VAETiling& tiling() const { return tiling_; }
  TileGeometry encode_tile_geometry() const;
  TileGeometry decode_tile_geometry() const;
  // One batch element at a time (numerically the same, less memory for B > 1).
  void enable_slicing() { use_slicing_ = true; }
  void disable_slicing() { use_slicing_ = false; }

  torch::Dtype dtype() const;
  torch::Device device() const;

  VAEConfig config;
  VAEEncoder encoder{nullptr};
  VAEDecoder decoder{nullptr};
  // diffusers' frame batch sizes (attributes, not config keys). The released VAE was trained with
  // these; other values change the results.
  int64_t num_sample_frames_batch_size = 8;
  int64_t num_latent_frames_batch_size = 2;

 private:
  torch::Tensor encode_one(const torch::Tensor& video);  // tiling decision + frame batches
  torch::Tensor decode_one(const torch::Tensor& latents);
  torch::Tensor encode_frames(const torch::Tensor& video);
  torch::Tensor decode_frames(const torch::Tensor& latents);
  bool use_tiling_ = false, use_slicing_ = false;
  VAETiling tiling_;
};
TORCH_MODULE(AutoencoderKLCogVideoX);

// Loads `vae/` of a diffusers folder (config.json + safetensors), strictly, in `dtype`.
AutoencoderKLCogVideoX load_vae(const std::filesystem::path& dir, torch::Dtype dtype = torch::kFloat32,
                                torch::Device device = torch::kCPU);

// Latent scaling between the VAE and the diffusion model:
// scale_latents: encoder latents -> diffusion space (z * scaling_factor), for training targets and
// the pipelines' video latents. unscale_latents: the inverse, applied before decode
// ((1 / scaling_factor) * z, as the pipelines compute it). scale_image_latents: the I2V image
// latent as the pipelines prepare it; only here invert_scale_latents (1.5) matters: it divides instead.
torch::Tensor scale_latents(const torch::Tensor& latents, const VAEConfig& config);
torch::Tensor unscale_latents(const torch::Tensor& latents, const VAEConfig& config);
torch::Tensor scale_image_latents(const torch::Tensor& latents, const VAEConfig& config);

// A tiny VAE shaped like the golden one with `variant`'s latent scaling, randomly initialised from
// `seed` (1-D parameters randomised on top of the default init), and its folder (config.json +
// diffusion_pytorch_model.safetensors) at `dir`.
AutoencoderKLCogVideoX make_tiny_vae(uint64_t seed, const std::string& variant = kVariant5b);
void write_tiny_vae(const std::filesystem::path& dir, uint64_t seed, const std::string& variant = kVariant5b);

}  // namespace cvx
