// AutoencoderKLCogVideoX: frame-batched and tiled encode/decode, latent distribution, scaling, loading.
#include "cvx/model/vae.h"

#include <ATen/CPUGeneratorImpl.h>

#include "cvx/core/error.h"
#include "cvx/core/shape.h"
#include "cvx/io/model_folder.h"

namespace cvx {

std::vector<std::pair<int64_t, int64_t>> frame_batches(int64_t frames, int64_t batch_size) {
  CVX_CHECK_AS(ConfigError, batch_size > 0, "vae: frame batch size must be positive, got ", batch_size);
  const int64_t batches = std::max<int64_t>(frames / batch_size, 1), remainder = frames % batch_size;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t i = 0; i < batches; ++i)
    out.emplace_back(i == 0 ? 0 : batch_size * i + remainder, std::min(batch_size * (i + 1) + remainder, frames));
  return out;
}

namespace {

// `step` over the frame batches of x (dim 2) in order, with one conv cache threaded through.
template <class Step>
torch::Tensor run_frame_batches(const torch::Tensor& x, int64_t batch_size, Step&& step) {
  ConvCache cache;
  std::vector<torch::Tensor> outputs;
  for (const auto& [start, end] : frame_batches(x.size(2), batch_size))
    outputs.push_back(step(x.slice(2, start, end), cache));
  return outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 2);
}

// diffusers' blend_v / blend_h, in place on `b`: its first rows (columns) fade in from the last
// ones of `a`. Row by row with double weights, as there, so the rounding is the same.
void blend(const torch::Tensor& a, const torch::Tensor& b, int64_t dim, int64_t extent) {
  const int64_t e = std::min({a.size(dim), b.size(dim), extent});
  for (int64_t y = 0; y < e; ++y) {
    const double w = static_cast<double>(y) / static_cast<double>(e);
    b.select(dim, y).copy_(a.select(dim, a.size(dim) - e + y) * (1 - w) + b.select(dim, y) * w);
  }
}

// diffusers' tiled_encode / tiled_decode: `run` on every tile (own frame batches and caches);
// tiles are blended in place with their upper and left neighbours (already blended themselves),
// and the top-left keep_height x keep_width of each is concatenated. Only the previous row of
// tiles is kept alive.
template <class Run>
torch::Tensor run_tiled(const torch::Tensor& x, const TileGeometry& g, Run&& run) {
  std::vector<torch::Tensor> rows, above;
  for (int64_t i = 0; i < x.size(3); i += g.stride_height) {
    std::vector<torch::Tensor> current, kept;
    for (int64_t j = 0; j < x.size(4); j += g.stride_width) {
      auto tile = run(x.slice(3, i, i + g.tile_height).slice(4, j, j + g.tile_width));
      if (i > 0) blend(above[current.size()], tile, 3, g.blend_height);
      if (j > 0) blend(current.back(), tile, 4, g.blend_width);
      kept.push_back(tile.slice(3, 0, g.keep_height).slice(4, 0, g.keep_width));
      current.push_back(tile);
    }
    rows.push_back(torch::cat(kept, 4));
    above = std::move(current);
  }
  return torch::cat(rows, 3);
}

// use_slicing: one batch element at a time.
template <class Run>
torch::Tensor per_sample(const torch::Tensor& x, bool slicing, Run&& run) {
  if (!slicing || x.size(0) == 1) return run(x);
  std::vector<torch::Tensor> outputs;
  for (const auto& sample : x.split(1)) outputs.push_back(run(sample));
  return torch::cat(outputs, 0);
}

// Tiles of `tile` input units, blended and kept in output units `out` (latent <-> pixel sizes).
TileGeometry tile_geometry(int64_t tile_height, int64_t tile_width, int64_t out_height, int64_t out_width,
                           double factor_height, double factor_width) {
  TileGeometry g;
  g.tile_height = tile_height;
  g.tile_width = tile_width;
  // Python int() of double products, as diffusers computes them.
  g.stride_height = static_cast<int64_t>(static_cast<double>(tile_height) * (1 - factor_height));
  g.stride_width = static_cast<int64_t>(static_cast<double>(tile_width) * (1 - factor_width));
  g.blend_height = static_cast<int64_t>(static_cast<double>(out_height) * factor_height);
  g.blend_width = static_cast<int64_t>(static_cast<double>(out_width) * factor_width);
  g.keep_height = out_height - g.blend_height;
  g.keep_width = out_width - g.blend_width;
  return g;
}

}  // namespace

LatentDistribution LatentDistribution::from_moments(const torch::Tensor& moments) {
  CVX_CHECK(moments.dim() == 5 && moments.size(1) % 2 == 0,
            "latent distribution: expected moments [B, 2C, F, H, W], got ", shape_string(moments.sizes()));
  const auto halves = moments.chunk(2, 1);
  return {halves[0], torch::clamp(halves[1], -30.0, 20.0)};
}

torch::Tensor LatentDistribution::std() const { return torch::exp(0.5 * logvar); }

torch::Tensor LatentDistribution::sample(const torch::Tensor& eps) const {
  CVX_CHECK(eps.sizes() == mean.sizes(), "latent distribution: noise ", shape_string(eps.sizes()),
            " does not match the latents ", shape_string(mean.sizes()));
  return mean + std() * eps.to(mean.device(), mean.scalar_type());
}

torch::Tensor LatentDistribution::sample(at::Generator generator) const {
  return sample(torch::randn(mean.sizes(), generator, mean.options().device(generator.device())));
}

torch::Tensor LatentDistribution::sample(uint64_t seed) const { return sample(at::detail::createCPUGenerator(seed)); }

AutoencoderKLCogVideoXImpl::AutoencoderKLCogVideoXImpl(const VAEConfig& c, const ModuleInit& init) : config(c) {
  config.validate();
  encoder = register_module("encoder", VAEEncoder(config, init));
  decoder = register_module("decoder", VAEDecoder(config, init));
  tiling_.sample_min_height = config.sample_height / 2;
  tiling_.sample_min_width = config.sample_width / 2;
  tiling_.latent_min_height = tiling_.sample_min_height / config.spatial_compression_ratio();
  tiling_.latent_min_width = tiling_.sample_min_width / config.spatial_compression_ratio();
}

torch::Dtype AutoencoderKLCogVideoXImpl::dtype() const { return encoder->conv_in->conv->weight.scalar_type(); }

torch::Device AutoencoderKLCogVideoXImpl::device() const { return encoder->conv_in->conv->weight.device(); }

void AutoencoderKLCogVideoXImpl::enable_tiling(std::optional<int64_t> min_height, std::optional<int64_t> min_width,
                                               std::optional<double> factor_height,
                                               std::optional<double> factor_width) {
  // Python's `value or current`: None and 0 keep the current value.
  auto pick = [](const auto& given, auto current) { return given && *given != 0 ? *given : current; };
  VAETiling t = tiling_;
  t.sample_min_height = pick(min_height, t.sample_min_height);
  t.sample_min_width = pick(min_width, t.sample_min_width);
  t.latent_min_height = t.sample_min_height / config.spatial_compression_ratio();
  t.latent_min_width = t.sample_min_width / config.spatial_compression_ratio();
  t.overlap_factor_height = pick(factor_height, t.overlap_factor_height);
  t.overlap_factor_width = pick(factor_width, t.overlap_factor_width);
  CVX_CHECK_AS(ConfigError, t.latent_min_height > 0 && t.latent_min_width > 0, "vae tiling: tiles of ",
               t.sample_min_height, "x", t.sample_min_width, " pixels are smaller than one latent pixel (",
               config.spatial_compression_ratio(), " pixels)");
  CVX_CHECK_AS(ConfigError,
               t.overlap_factor_height > 0 && t.overlap_factor_height < 1 && t.overlap_factor_width > 0 &&
                   t.overlap_factor_width < 1,
               "vae tiling: overlap factors must lie in (0, 1), got ", t.overlap_factor_height, " and ",
               t.overlap_factor_width);
  const VAETiling previous = tiling_;
  tiling_ = t;
  const auto enc = encode_tile_geometry(), dec = decode_tile_geometry();
  if (std::min({enc.stride_height, enc.stride_width, dec.stride_height, dec.stride_width}) <= 0) {
    tiling_ = previous;
    CVX_THROW_AS(ConfigError, "vae tiling: latent tiles of ", t.latent_min_height, "x", t.latent_min_width,
                 " with overlap factors ", t.overlap_factor_height, "/", t.overlap_factor_width, " leave no stride");
  }
  use_tiling_ = true;
}

TileGeometry AutoencoderKLCogVideoXImpl::encode_tile_geometry() const {
  const auto& t = tiling_;
  return tile_geometry(t.sample_min_height, t.sample_min_width, t.latent_min_height, t.latent_min_width,
                       t.overlap_factor_height, t.overlap_factor_width);
}

TileGeometry AutoencoderKLCogVideoXImpl::decode_tile_geometry() const {
  const auto& t = tiling_;
  return tile_geometry(t.latent_min_height, t.latent_min_width, t.sample_min_height, t.sample_min_width,
                       t.overlap_factor_height, t.overlap_factor_width);
}

torch::Tensor AutoencoderKLCogVideoXImpl::encode_frames(const torch::Tensor& video) {
  return run_frame_batches(video, num_sample_frames_batch_size,
                           [this](const torch::Tensor& x, ConvCache& cache) { return encoder->forward(x, cache); });
}

torch::Tensor AutoencoderKLCogVideoXImpl::decode_frames(const torch::Tensor& latents) {
  return run_frame_batches(latents, num_latent_frames_batch_size,
                           [this](const torch::Tensor& z, ConvCache& cache) { return decoder->forward(z, cache); });
}

torch::Tensor AutoencoderKLCogVideoXImpl::encode_one(const torch::Tensor& video) {
  if (use_tiling_ && (video.size(4) > tiling_.sample_min_width || video.size(3) > tiling_.sample_min_height))
    return run_tiled(video, encode_tile_geometry(), [this](const torch::Tensor& tile) { return encode_frames(tile); });
  return encode_frames(video);
}

torch::Tensor AutoencoderKLCogVideoXImpl::decode_one(const torch::Tensor& latents) {
  if (use_tiling_ && (latents.size(4) > tiling_.latent_min_width || latents.size(3) > tiling_.latent_min_height))
    return run_tiled(latents, decode_tile_geometry(),
                     [this](const torch::Tensor& tile) { return decode_frames(tile); });
  return decode_frames(latents);
}

torch::Tensor AutoencoderKLCogVideoXImpl::encode_moments(const torch::Tensor& video) {
  const int64_t ratio = config.spatial_compression_ratio();
  CVX_CHECK(video.dim() == 5 && video.size(1) == config.in_channels && video.size(2) > 0 &&
                video.size(3) % ratio == 0 && video.size(4) % ratio == 0 && video.size(3) > 0 && video.size(4) > 0,
            "vae encode: expected a video [B, ", config.in_channels, ", F, H, W] with H and W multiples of ", ratio,
            ", got ", shape_string(video.sizes()));
  torch::NoGradGuard no_grad;
  const auto x = video.to(device(), dtype());
  return per_sample(x, use_slicing_, [this](const torch::Tensor& v) { return encode_one(v); });
}

LatentDistribution AutoencoderKLCogVideoXImpl::encode(const torch::Tensor& video) {
  torch::NoGradGuard no_grad;
  return LatentDistribution::from_moments(encode_moments(video));
}

torch::Tensor AutoencoderKLCogVideoXImpl::decode(const torch::Tensor& latents) {
  CVX_CHECK(latents.dim() == 5 && latents.size(1) == config.latent_channels && latents.size(2) > 0,
            "vae decode: expected latents [B, ", config.latent_channels, ", F, H, W], got ",
            shape_string(latents.sizes()));
  torch::NoGradGuard no_grad;
  const auto z = latents.to(device(), dtype());
  return per_sample(z, use_slicing_, [this](const torch::Tensor& l) { return decode_one(l); });
}

torch::Tensor AutoencoderKLCogVideoXImpl::forward(const torch::Tensor& video, bool sample_posterior,
                                                  std::optional<at::Generator> generator) {
  const auto posterior = encode(video);
  if (!sample_posterior) return decode(posterior.mode());
  torch::NoGradGuard no_grad;
  return decode(generator ? posterior.sample(*generator) : posterior.sample(torch::randn_like(posterior.mean)));
}

AutoencoderKLCogVideoX load_vae(const std::filesystem::path& dir, torch::Dtype dtype, torch::Device device) {
  return load_component_model<AutoencoderKLCogVideoX, VAEConfig>(dir, dtype, device);
}

torch::Tensor scale_latents(const torch::Tensor& latents, const VAEConfig& config) {
  return latents * config.scaling_factor;
}

torch::Tensor unscale_latents(const torch::Tensor& latents, const VAEConfig& config) {
  return latents * (1.0 / config.scaling_factor);
}

torch::Tensor scale_image_latents(const torch::Tensor& latents, const VAEConfig& config) {
  return config.invert_scale_latents ? unscale_latents(latents, config) : scale_latents(latents, config);
}

}  // namespace cvx
