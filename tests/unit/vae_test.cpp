// Properties of the VAE that the golden set does not pin down: causality, frame counts, bf16,
// tiling, slicing, the conv cache hand-over, the tiny maker, scaling and config errors.
#include "cvx/model/vae.h"

#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/tiny_pipeline.h"
#include "test_util.h"

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

torch::Tensor video(int64_t frames, int64_t height = 16, int64_t width = 24, int64_t batch = 1) {
  return torch::rand({batch, 3, frames, height, width}) * 2 - 1;  // [B, 3, F, H, W] in [-1, 1]
}

// Zeroes every off-centre spatial tap: the network then mixes nothing across pixels except through
// GroupNorm statistics.
void make_spatially_pointwise(cvx::AutoencoderKLCogVideoX& vae) {
  torch::NoGradGuard no_grad;
  for (auto& item : vae->named_parameters()) {
    auto& w = item.value();
    if (w.dim() < 4 || w.size(-1) != 3) continue;
    const auto centre = w.narrow(-2, 1, 1).narrow(-1, 1, 1).clone();
    w.zero_();
    w.narrow(-2, 1, 1).narrow(-1, 1, 1).copy_(centre);
  }
}

}  // namespace

// GroupNorm takes its statistics over every frame of a frame batch, so within one batch all
// frames depend on each other; across batches only the causal conv context flows, forwards.
TEST(VAE, ChangingAFrameNeverChangesEarlierFrameBatches) {
  auto vae = cvx::make_tiny_vae(1);
  const int64_t frames = 25;  // encoder batches [0,9) [9,17) [17,25) -> latent frames [0,3) [3,5) [5,7)
  const auto x = video(frames);
  const auto base = vae->encode(x).mean;
  for (const auto& [start, end] : cvx::frame_batches(frames, vae->num_sample_frames_batch_size)) {
    auto changed = x.clone();
    changed.select(2, start).neg_();
    const auto latents = vae->encode(changed).mean;
    const int64_t unchanged = start == 0 ? 0 : vae->config.latent_frames(start);  // latent frames of earlier batches
    SCOPED_TRACE("pixel frame " + std::to_string(start));
    EXPECT_TRUE(torch::equal(latents.narrow(2, 0, unchanged), base.narrow(2, 0, unchanged)));
    EXPECT_GT(max_abs_diff(latents.narrow(2, unchanged, 1), base.narrow(2, unchanged, 1)), 1e-4);
  }
  const auto z = torch::randn({1, 4, 7, 2, 3});
  const auto decoded = vae->decode(z);  // decoder batches [0,3) [3,5) [5,7) -> frames [0,9) [9,17) [17,25)
  for (const auto& [start, end] : cvx::frame_batches(7, vae->num_latent_frames_batch_size)) {
    auto changed = z.clone();
    changed.select(2, start).neg_();
    const auto out = vae->decode(changed);
    const int64_t unchanged = start == 0 ? 0 : 4 * start - 3;  // pixel frames of earlier batches
    SCOPED_TRACE("latent frame " + std::to_string(start));
    EXPECT_TRUE(torch::equal(out.narrow(2, 0, unchanged), decoded.narrow(2, 0, unchanged)));
    EXPECT_GT(max_abs_diff(out.narrow(2, unchanged, 1), decoded.narrow(2, unchanged, 1)), 1e-4);
  }
}

TEST(VAE, EightNPlusOneFramesMakeTwoNPlusOneLatentFramesAndBack) {
  auto vae = cvx::make_tiny_vae(2);
  for (const int64_t n : {0, 1, 2, 3}) {
    SCOPED_TRACE("N = " + std::to_string(n));
    const auto dist = vae->encode(video(8 * n + 1, 16, 24));
    EXPECT_EQ(dist.mean.sizes().vec(), (std::vector<int64_t>{1, 4, 2 * n + 1, 2, 3}));
    EXPECT_EQ(dist.logvar.sizes(), dist.mean.sizes());
    const auto decoded = vae->decode(dist.mean);
    EXPECT_EQ(decoded.sizes().vec(), (std::vector<int64_t>{1, 3, 8 * n + 1, 16, 24}));
    EXPECT_TRUE(torch::isfinite(decoded).all().item<bool>());
  }
  // 8 frames (no odd first frame) -> 2 latent frames -> 8 frames.
  const auto even = vae->encode(video(8)).mean;
  EXPECT_EQ(even.size(2), 2);
  EXPECT_EQ(vae->decode(even).size(2), 8);
}

// bf16 weights and activations against fp32: the tiny VAE's outputs (|x| <~ 1) stay within 5% of
// their largest magnitude (bf16 keeps 8 mantissa bits; ~20 layers of rounding).
TEST(VAE, Bf16IsCloseToFp32) {
  auto vae = cvx::make_tiny_vae(3);
  const auto x = video(9);
  const auto mean = vae->encode(x).mean;
  const auto decoded = vae->decode(mean);
  vae->to(torch::kBFloat16);
  EXPECT_EQ(vae->dtype(), torch::kBFloat16);
  const auto mean16 = vae->encode(x).mean;
  const auto decoded16 = vae->decode(mean);
  EXPECT_EQ(mean16.scalar_type(), torch::kBFloat16);
  EXPECT_LE(max_abs_diff(mean16, mean), 0.05 * mean.abs().max().item<double>());
  EXPECT_LE(max_abs_diff(decoded16, decoded), 0.05 * decoded.abs().max().item<double>());
}

// Tiles legitimately see other context than the whole frame (zero padding at tile borders, GroupNorm
// statistics per tile), so for a general model tiled and untiled results differ. Remove both
// causes and they must agree: then any error in cutting, blending or reassembling shows.
TEST(VAE, TiledMatchesUntiledWhenTilesSeeTheSameContext) {
  auto vae = cvx::make_tiny_vae(4);
  make_spatially_pointwise(vae);
  // Decoder: with the spatial norms' GroupNorm scale and shift at 0 the decoder is a pointwise
  // function of the (spatially varying) latent.
  {
    torch::NoGradGuard no_grad;
    for (auto& item : vae->decoder->named_parameters())
      if (item.key().find("norm_layer") != std::string::npos) item.value().zero_();
  }
  const auto z = torch::randn({1, 4, 3, 6, 8});
  const auto untiled = vae->decode(z);
  vae->enable_tiling(32, 32, 0.25, 0.25);  // latent tiles 4x4 every 3: 2x3 tiles with overlaps
  const auto tiled = vae->decode(z);
  ASSERT_EQ(tiled.sizes(), untiled.sizes());
  EXPECT_GT(untiled.std().item<double>(), 1e-3);
  EXPECT_LE(max_abs_diff(tiled, untiled), 1e-5);

  // Encoder: a pattern of period 8 pixels gives every tile (offsets and sizes multiples of 8 here)
  // the same GroupNorm statistics as the whole frame at every resolution.
  auto pattern = video(9, 8, 8).repeat({1, 1, 1, 6, 8});  // [1, 3, 9, 48, 64]
  const auto tiled_mean = vae->encode(pattern).mean;
  vae->disable_tiling();
  const auto untiled_mean = vae->encode(pattern).mean;
  ASSERT_EQ(tiled_mean.sizes(), untiled_mean.sizes());
  EXPECT_LE(max_abs_diff(tiled_mean, untiled_mean), 1e-4);
}

TEST(VAE, TilingDefaultsFollowTheConfigAndSmallInputsStayUntiled) {
  auto vae = cvx::make_tiny_vae(5);
  EXPECT_EQ(vae->tiling().sample_min_height, 16);  // sample 32x48 / 2
  EXPECT_EQ(vae->tiling().sample_min_width, 24);
  EXPECT_EQ(vae->tiling().latent_min_height, 2);
  EXPECT_EQ(vae->tiling().latent_min_width, 3);
  const auto x = video(5, 16, 24);
  const auto untiled = vae->encode(x).mean;
  vae->enable_tiling();
  EXPECT_TRUE(vae->tiling_enabled());
  EXPECT_TRUE(torch::equal(vae->encode(x).mean, untiled));  // not larger than one tile
  EXPECT_THROW(vae->enable_tiling(4), cvx::ConfigError);    // smaller than one latent pixel
  EXPECT_THROW(vae->enable_tiling(std::nullopt, std::nullopt, 1.5), cvx::ConfigError);
  EXPECT_EQ(vae->tiling().sample_min_height, 16);  // a refused call changes nothing
}

TEST(VAE, SlicingGivesTheSameResults) {
  auto vae = cvx::make_tiny_vae(6);
  const auto x = video(9, 16, 24, 2);
  const auto moments = vae->encode_moments(x);
  const auto decoded = vae->decode(moments.narrow(1, 0, 4));
  vae->enable_slicing();
  EXPECT_LE(max_abs_diff(vae->encode_moments(x), moments), 1e-6);
  EXPECT_LE(max_abs_diff(vae->decode(moments.narrow(1, 0, 4)), decoded), 1e-6);
}

// What a frame batch leaves behind for the next one: kt - 1 = 2 input frames per 3x3x3 causal conv.
TEST(VAE, ConvCacheHoldsTwoFramesPerCausalConv) {
  auto vae = cvx::make_tiny_vae(7);
  torch::NoGradGuard no_grad;
  cvx::ConvCache cache;
  vae->encoder->forward(video(9), cache);
  size_t convs = 0;
  for (const auto& module : vae->encoder->modules(false))
    if (auto* conv = module->as<cvx::CausalConv3dImpl>(); conv && conv->time_kernel == 3) ++convs;
  EXPECT_EQ(cache.size(), convs);
  for (const auto& [conv, frames] : cache) EXPECT_EQ(frames.size(2), 2);
}

TEST(VAE, TinyFolderLoadsBackIdentically) {
  const auto dir = cvx::test::scratch_dir("tiny_vae");
  cvx::write_tiny_pipeline(dir, "1.5-i2v", 8);
  const auto model = cvx::ModelFolder::open(dir);
  EXPECT_TRUE(model.has("vae"));
  EXPECT_EQ(model.component("vae").class_name(), "AutoencoderKLCogVideoX");
  auto original = cvx::make_tiny_vae(8, "1.5-i2v");
  auto loaded = cvx::load_vae(dir / "vae");
  EXPECT_TRUE(loaded->config.invert_scale_latents);
  EXPECT_EQ(loaded->config.to_json(), original->config.to_json());
  const auto x = video(9);
  const auto mean = original->encode(x).mean;
  EXPECT_TRUE(torch::equal(loaded->encode(x).mean, mean));
  EXPECT_TRUE(torch::equal(loaded->decode(mean), original->decode(mean)));
  auto bf16 = cvx::load_vae(dir / "vae", torch::kBFloat16);
  EXPECT_EQ(bf16->dtype(), torch::kBFloat16);
}

TEST(VAE, LatentDistributionAndScaling) {
  const auto moments = torch::randn({2, 8, 3, 2, 2}) * 30;
  const auto dist = cvx::LatentDistribution::from_moments(moments);
  EXPECT_TRUE(torch::equal(dist.mean, moments.narrow(1, 0, 4)));
  EXPECT_LE(dist.logvar.max().item<double>(), 20.0);
  EXPECT_GE(dist.logvar.min().item<double>(), -30.0);
  const auto eps = torch::randn_like(dist.mean);
  EXPECT_TRUE(torch::allclose(dist.sample(eps), dist.mean + torch::exp(0.5 * dist.logvar) * eps));
  EXPECT_TRUE(torch::equal(dist.sample(uint64_t{42}), dist.sample(uint64_t{42})));
  EXPECT_FALSE(torch::equal(dist.sample(uint64_t{42}), dist.sample(uint64_t{43})));
  EXPECT_TRUE(torch::equal(dist.mode(), dist.mean));

  const auto z = torch::randn({1, 4, 2, 3, 3});
  auto config = cvx::cogvideox_vae_2b();
  EXPECT_TRUE(torch::allclose(cvx::unscale_latents(cvx::scale_latents(z, config), config), z));
  EXPECT_TRUE(torch::equal(cvx::scale_image_latents(z, config), cvx::scale_latents(z, config)));
  config = cvx::cogvideox15_vae();
  EXPECT_TRUE(torch::equal(cvx::scale_image_latents(z, config), cvx::unscale_latents(z, config)));
  EXPECT_DOUBLE_EQ(cvx::cogvideox_vae_5b().scaling_factor, 0.7);
}

TEST(VAE, ConfigReadsDefaultsAndRejectsWhatItCannotRun) {
  const auto empty = cvx::VAEConfig::from_json(nlohmann::json::object());
  EXPECT_EQ(empty.to_json(), cvx::cogvideox_vae_2b().to_json());
  EXPECT_EQ(empty.spatial_compression_ratio(), 8);
  EXPECT_EQ(empty.temporal_compression_levels(), 2);
  EXPECT_EQ(empty.latent_frames(49), 13);
  auto with = [](const char* key, nlohmann::json value) {
    auto j = cvx::tiny_vae().to_json();
    j[key] = std::move(value);
    return j;
  };
  EXPECT_THROW(cvx::VAEConfig::from_json(with("use_quant_conv", true)), cvx::FormatError);
  EXPECT_THROW(cvx::VAEConfig::from_json(with("layers_per_block", "3")), cvx::FormatError);
  EXPECT_THROW(cvx::VAEConfig::from_json(with("norm_num_groups", 3)), cvx::FormatError);
  EXPECT_THROW(cvx::VAEConfig::from_json(with("temporal_compression_ratio", 3)), cvx::FormatError);
  EXPECT_THROW(cvx::VAEConfig::from_json(with("down_block_types", {"DownEncoderBlock2D"})), cvx::FormatError);
  EXPECT_THROW(cvx::VAEConfig::from_json(with("_class_name", "AutoencoderKL")), cvx::FormatError);
  const auto mean = cvx::VAEConfig::from_json(with("latents_mean", {0.5, 1.5})).latents_mean;
  ASSERT_TRUE(mean.has_value());
  EXPECT_EQ(*mean, (std::vector<double>{0.5, 1.5}));
  auto vae = cvx::make_tiny_vae(9);
  EXPECT_THROW(vae->encode(video(9, 12, 24)), cvx::Error);  // H not a multiple of 8
  EXPECT_THROW(vae->decode(torch::zeros({1, 3, 2, 2, 2})), cvx::Error);
}
