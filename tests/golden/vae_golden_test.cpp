// Parity of AutoencoderKLCogVideoX with diffusers for every vae case of the golden set: every
// recorded moment, distribution statistic, sample and decoding, on each path a case records
// (frame-batched, tiled, untiled, unbatched), plus the frame batches, tile geometry and defaults
// its meta.json states.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "cvx/io/model_folder.h"
#include "cvx/model/vae.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

using Case = cvx::test::GoldenCase;

// The README's rule for quantities its table lacks: 30 x the largest float32-vs-float64 error the
// case observed, at least 1e-5, rounded up to 1, 2 or 5 times a power of ten.
double fallback_atol(const Case& c) {
  double observed = 0;
  if (c.meta.contains("observed"))
    for (const auto& item : c.meta["observed"].items())
      if (item.value().is_object() && item.value().contains("max_abs_fp32_vs_fp64"))
        observed = std::max(observed, item.value()["max_abs_fp32_vs_fp64"].get<double>());
  const double wanted = std::max(1e-5, 30 * observed);
  const double decade = std::pow(10.0, std::floor(std::log10(wanted)));
  for (const double step : {1.0, 2.0, 5.0, 10.0})
    if (step * decade >= wanted * (1 - 1e-12)) return step * decade;
  return 10 * decade;
}

// EXPECTs closeness and prints the largest error.
void expect_close(const Case& c, const std::string& name, const torch::Tensor& actual, const torch::Tensor& expected,
                  double atol) {
  EXPECT_TRUE(cvx::test::all_close(actual, expected, atol)) << name;
  if (actual.sizes() == expected.sizes())
    std::printf("[ golden ] %s %s max|diff| %.3g (atol %.0e, rtol 1e-4)\n", c.name.c_str(), name.c_str(),
                (actual - expected).abs().max().item<double>(), atol);
}

bool has_tiling(const Case& c) { return c.meta.contains("enable_tiling_args"); }

void enable_tiling_as_recorded(cvx::AutoencoderKLCogVideoX& vae, const Case& c) {
  const auto& a = c.meta.at("enable_tiling_args");
  auto given = [&](const char* key) { return a.contains(key) && !a[key].is_null(); };
  auto get_int = [&](const char* key) {
    return given(key) ? std::optional<int64_t>(a[key].get<int64_t>()) : std::nullopt;
  };
  auto get_double = [&](const char* key) {
    return given(key) ? std::optional<double>(a[key].get<double>()) : std::nullopt;
  };
  vae->enable_tiling(get_int("tile_sample_min_height"), get_int("tile_sample_min_width"),
                     get_double("tile_overlap_factor_height"), get_double("tile_overlap_factor_width"));
}

// A recorded tensor `<output|alt>[.<path>].<quantity>`: `path` empty is the case's reference path
// (tiled when its meta.json enables tiling); "tiled", "untiled", "unbatched" (all frames in one batch).
struct Recorded {
  std::string name, path, quantity;
};

std::vector<Recorded> recorded_results(const Case& c) {
  std::vector<Recorded> out;
  for (const auto& name : c.data->names()) {
    if (name.rfind("input.", 0) == 0) continue;
    Recorded r{name, "", ""};
    const auto first = name.find('.'), last = name.rfind('.');
    r.quantity = name.substr(last + 1);
    if (last != first) r.path = name.substr(first + 1, last - first - 1);
    out.push_back(r);
  }
  return out;
}

// Runs a freshly loaded model the way `path` describes and returns the quantities `wanted` (names as recorded).
std::map<std::string, torch::Tensor> run_path(const Case& c, const std::string& path,
                                              const std::set<std::string>& wanted) {
  auto vae = cvx::load_vae(c.dir / c.meta.at("model_dir").get<std::string>(), torch::kFloat32);
  // Frame batch sizes as the case recorded them, else the model's defaults.
  const auto recorded_batches = c.meta.value("frame_batching", nlohmann::json::object());
  const int64_t sample_batch =
      recorded_batches.value("num_sample_frames_batch_size", vae->num_sample_frames_batch_size);
  const int64_t latent_batch =
      recorded_batches.value("num_latent_frames_batch_size", vae->num_latent_frames_batch_size);
  auto configure = [&](const std::string& p) {
    vae->disable_tiling();
    vae->num_sample_frames_batch_size = sample_batch;
    vae->num_latent_frames_batch_size = latent_batch;
    if (p == "tiled" || (p.empty() && has_tiling(c))) enable_tiling_as_recorded(vae, c);
    if (p == "unbatched") {  // one batch holds every frame
      vae->num_sample_frames_batch_size = 1 << 20;
      vae->num_latent_frames_batch_size = 1 << 20;
    }
  };
  EXPECT_TRUE(path.empty() || path == "tiled" || path == "untiled" || path == "unbatched")
      << "no rule for results of path '" << path << "'";
  EXPECT_TRUE(path != "tiled" || has_tiling(c)) << "tiled results without enable_tiling_args";
  const auto video = c.tensor("input.video");
  std::map<std::string, torch::Tensor> out;
  torch::Tensor untiled_mean;
  if (wanted.count("decoded_from_untiled_mean")) {
    configure("untiled");
    untiled_mean = vae->encode(video).mean;
  }
  configure(path);
  const auto moments = vae->encode_moments(video);
  const auto dist = cvx::LatentDistribution::from_moments(moments);
  out["latent_moments"] = moments;
  out["latent_mean"] = dist.mean;
  out["latent_logvar"] = dist.logvar;
  out["latent_std"] = dist.std();
  if (c.has("input.sample_eps")) out["latent_sample"] = dist.sample(c.tensor("input.sample_eps"));
  if (wanted.count("decoded_from_mean")) out["decoded_from_mean"] = vae->decode(dist.mean);
  if (untiled_mean.defined()) out["decoded_from_untiled_mean"] = vae->decode(untiled_mean);
  return out;
}

std::vector<std::vector<int64_t>> as_pairs(const std::vector<std::pair<int64_t, int64_t>>& batches) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& [start, end] : batches) out.push_back({start, end});
  return out;
}

}  // namespace

TEST(VAEGolden, EncodeSampleDecodeMatchDiffusersOnEveryRecordedPath) {
  CVX_REQUIRE_GOLDEN();
  size_t cases_with_data = 0;
  for (const auto& c : cvx::test::golden_cases("vae")) {
    if (!c.data) continue;
    ++cases_with_data;
    SCOPED_TRACE(c.name);
    const auto recorded = recorded_results(c);
    std::map<std::string, std::set<std::string>> wanted;  // path -> quantities
    for (const auto& r : recorded) wanted[r.path].insert(r.quantity);
    size_t compared = 0;
    for (const auto& [path, quantities] : wanted) {
      const auto results = run_path(c, path, quantities);
      const bool tiled = path == "tiled" || (path.empty() && has_tiling(c));
      for (const auto& r : recorded) {
        if (r.path != path) continue;
        ASSERT_TRUE(results.count(r.quantity)) << "no rule computes '" << r.name << "'";
        // The README's table names the quantities latent_mean and decoded (tiled_... on tiled paths);
        // the other latent statistics share latent_mean's row.
        const std::string row =
            std::string(tiled ? "tiled_" : "") + (r.quantity.rfind("decoded", 0) == 0 ? "decoded" : "latent_mean");
        const double atol = cvx::test::golden_atol(c.name, row, fallback_atol(c));
        expect_close(c, r.name, results.at(r.quantity), c.tensor(r.name), atol);
        ++compared;
      }
    }
    EXPECT_GT(compared, 0u);
  }
  if (cases_with_data == 0) GTEST_SKIP() << "the golden manifest lists no vae case with data";
}

TEST(VAEGolden, FrameBatchesTileGeometryAndDefaultsAsRecorded) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("vae")) {
    SCOPED_TRACE(c.name);
    if (!c.meta.contains("model_dir")) continue;
    const auto dir = c.dir / c.meta.at("model_dir").get<std::string>();
    if (c.meta.contains("config")) {  // config.json reads and writes back unchanged
      const auto folder = cvx::open_component(dir);
      EXPECT_EQ(cvx::VAEConfig::from_json(folder.config).to_json(), folder.config);
    }
    auto vae = cvx::load_vae(dir);
    if (c.meta.contains("defaults")) {
      const auto& d = c.meta["defaults"];
      if (d.contains("num_sample_frames_batch_size"))
        EXPECT_EQ(vae->num_sample_frames_batch_size, d["num_sample_frames_batch_size"].get<int64_t>());
      if (d.contains("num_latent_frames_batch_size"))
        EXPECT_EQ(vae->num_latent_frames_batch_size, d["num_latent_frames_batch_size"].get<int64_t>());
      if (d.contains("tile_sample_min_height"))
        EXPECT_EQ(vae->tiling().sample_min_height, d["tile_sample_min_height"].get<int64_t>());
      if (d.contains("tile_sample_min_width"))
        EXPECT_EQ(vae->tiling().sample_min_width, d["tile_sample_min_width"].get<int64_t>());
      if (d.contains("tile_overlap_factor_height"))
        EXPECT_DOUBLE_EQ(vae->tiling().overlap_factor_height, d["tile_overlap_factor_height"].get<double>());
      if (d.contains("tile_overlap_factor_width"))
        EXPECT_DOUBLE_EQ(vae->tiling().overlap_factor_width, d["tile_overlap_factor_width"].get<double>());
    }
    if (c.meta.contains("frame_batching") && c.has("input.video")) {
      const auto& fb = c.meta["frame_batching"];
      const auto video = c.tensor("input.video");
      const int64_t frames = video.size(2), latent_frames = vae->config.latent_frames(frames);
      EXPECT_EQ(as_pairs(cvx::frame_batches(frames, fb.at("num_sample_frames_batch_size").get<int64_t>())),
                fb.at("encoder_frame_slices").get<std::vector<std::vector<int64_t>>>());
      EXPECT_EQ(as_pairs(cvx::frame_batches(latent_frames, fb.at("num_latent_frames_batch_size").get<int64_t>())),
                fb.at("decoder_latent_slices").get<std::vector<std::vector<int64_t>>>());
    }
    if (has_tiling(c)) {
      enable_tiling_as_recorded(vae, c);
      if (c.meta.contains("tiling_state_after_enable")) {
        const auto& s = c.meta["tiling_state_after_enable"];
        const auto& t = vae->tiling();
        EXPECT_EQ(t.sample_min_height, s.at("tile_sample_min_height").get<int64_t>());
        EXPECT_EQ(t.sample_min_width, s.at("tile_sample_min_width").get<int64_t>());
        EXPECT_EQ(t.latent_min_height, s.at("tile_latent_min_height").get<int64_t>());
        EXPECT_EQ(t.latent_min_width, s.at("tile_latent_min_width").get<int64_t>());
        EXPECT_DOUBLE_EQ(t.overlap_factor_height, s.at("tile_overlap_factor_height").get<double>());
        EXPECT_DOUBLE_EQ(t.overlap_factor_width, s.at("tile_overlap_factor_width").get<double>());
      }
      if (c.meta.contains("derived")) {
        const auto& d = c.meta["derived"];
        const auto enc = vae->encode_tile_geometry(), dec = vae->decode_tile_geometry();
        using V = std::vector<int64_t>;
        EXPECT_EQ(V({enc.stride_height, enc.stride_width}), d.at("encode_overlap_hw").get<V>());
        EXPECT_EQ(V({enc.blend_height, enc.blend_width}), d.at("encode_blend_extent_hw").get<V>());
        EXPECT_EQ(V({dec.stride_height, dec.stride_width}), d.at("decode_overlap_hw").get<V>());
        EXPECT_EQ(V({dec.blend_height, dec.blend_width}), d.at("decode_blend_extent_hw").get<V>());
      }
    }
  }
}

// How pipelines and the training recipe use the VAE, on their golden cases: decoding the final
// latents (unscaled, 1.5's extra leading frames dropped) and the I2V image latent (encode, the
// generator's first draw or the recorded noise, then the pipelines' or the recipe's scaling).
TEST(VAEGolden, PipelineAndTrainingUsesOfTheVAE) {
  CVX_REQUIRE_GOLDEN();
  auto cases = cvx::test::golden_cases("pipeline");
  for (auto& c : cvx::test::golden_cases("loss")) cases.push_back(std::move(c));
  size_t checked = 0;
  for (const auto& c : cases) {
    std::filesystem::path dir;
    auto path_of = [&](const char* key) { return c.meta.contains(key) && c.meta[key].is_string(); };
    if (path_of("pipeline_dir")) dir = c.dir / c.meta["pipeline_dir"].get<std::string>() / "vae";
    if (path_of("vae_dir")) dir = c.dir / c.meta["vae_dir"].get<std::string>();
    if (dir.empty() || !c.data) continue;
    SCOPED_TRACE(c.name);
    auto vae = cvx::load_vae(dir);
    const double latent_atol = cvx::test::golden_atol(c.name, "latent_mean", fallback_atol(c));
    auto compare = [&](const torch::Tensor& actual, const std::string& name, double atol) {
      expect_close(c, name, actual, c.tensor(name), atol);
      ++checked;
    };
    if (c.has("output.final_latents") && c.has("output.decoded")) {
      const auto latents = c.tensor("output.final_latents");  // [B, F, C, h, w]
      const int64_t extra = c.meta.value("shapes", nlohmann::json::object()).value("additional_frames", int64_t{0});
      const auto z = latents.narrow(1, extra, latents.size(1) - extra).permute({0, 2, 1, 3, 4});
      compare(vae->decode(cvx::unscale_latents(z, vae->config)), "output.decoded",
              cvx::test::golden_atol(c.name, "decoded", fallback_atol(c)));
    }
    // Pipelines encode the preprocessed image; the recipe its noised copy, sampled with given noise.
    const bool pipeline = c.has("inter.image_preprocessed");
    if (!pipeline && !c.has("inter.noisy_images")) continue;
    const auto image = pipeline ? c.tensor("inter.image_preprocessed").unsqueeze(2) : c.tensor("inter.noisy_images");
    const auto dist = vae->encode(image);
    compare(dist.mean, "inter.image_latent_mean", latent_atol);
    compare(dist.std(), "inter.image_latent_std", latent_atol);
    torch::Tensor latent;  // [B, C, 1, h, w]
    if (pipeline) {
      // The pipeline's generator, seeded as recorded: its first draw is the recorded noise.
      const auto sample = dist.sample(c.meta.at("call").at("generator_seed").get<uint64_t>());
      EXPECT_TRUE(torch::equal(sample, dist.sample(c.tensor("inter.image_latent_eps"))));
      latent = cvx::scale_image_latents(sample, vae->config);
    } else {
      // The recipe multiplies by scaling_factor whatever invert_scale_latents says.
      latent = cvx::scale_latents(dist.sample(c.tensor("input.image_latent_eps")), vae->config);
    }
    // Recorded as [B, F, C, h, w] with zero frames after the first.
    expect_close(c, "inter.image_latents", latent.permute({0, 2, 1, 3, 4}),
                 c.tensor("inter.image_latents").narrow(1, 0, 1), latent_atol);
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}
