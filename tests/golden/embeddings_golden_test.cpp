// Golden parity of the embedding helpers (cvx/model/embeddings.h) with diffusers v0.32.2. Data-driven:
// every combination listed in a case's meta.json (`rope`, `sincos3d`, `timestep_embedding`) is checked,
// with all sizes and arguments taken from there. RoPE tables and timestep embeddings are float32
// computations done with the reference's ops and must match bit for bit; the float64 sin-cos table too
// (checked with a 1e-15 tolerance in case a float64 pow/sin kernel differs by an ulp elsewhere).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cvx/model/embeddings.h"
#include "golden_util.h"
#include "test_util.h"  // golden_dir(), used by CVX_REQUIRE_GOLDEN

namespace cvx {
namespace {

using nlohmann::json;

constexpr const char* kCase = "embeddings";

// The index of a meta list entry: its "index" field, else its position (tensor `<list>.<index>`).
int64_t entry_index(const json& entry, size_t position) {
  return entry.contains("index") ? entry.at("index").get<int64_t>() : static_cast<int64_t>(position);
}

// Bitwise equality, with the largest difference in the failure message.
::testing::AssertionResult bit_equal(const torch::Tensor& actual, const torch::Tensor& expected) {
  if (actual.sizes() != expected.sizes() || actual.scalar_type() != expected.scalar_type()) {
    std::ostringstream os;
    os << "got " << actual.scalar_type() << " " << actual.sizes() << ", expected " << expected.scalar_type() << " "
       << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  if (torch::equal(actual, expected)) return ::testing::AssertionSuccess();
  const auto diff = (actual.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs();
  return ::testing::AssertionFailure() << "not bit-exact: " << diff.ne(0).sum().item<int64_t>() << " of "
                                       << diff.numel() << " elements differ, max |diff| " << diff.max().item<double>();
}

std::vector<test::GoldenCase> embedding_cases() { return test::golden_cases(kCase); }

TEST(EmbeddingsGolden, RotaryTables) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = embedding_cases();
  if (cases.empty()) GTEST_SKIP() << "no golden case " << kCase;
  int checked = 0;
  for (const auto& c : cases) {
    const auto& list = c.meta.contains("rope") ? c.meta.at("rope") : json::array();
    for (size_t k = 0; k < list.size(); ++k) {
      const json& e = list[k];
      const int64_t index = entry_index(e, k);
      SCOPED_TRACE(c.name + " rope[" + std::to_string(index) + "] " + e.dump());
      const auto head_dim = e.at("attention_head_dim").get<int64_t>();
      const auto grid_h = e.at("grid_h").get<int64_t>();
      const auto grid_w = e.at("grid_w").get<int64_t>();
      const auto base_h = e.at("base_h").get<int64_t>();
      const auto base_w = e.at("base_w").get<int64_t>();
      const auto grid_type = e.at("grid_type").get<std::string>();
      // The pipeline's temporal size: patch-frames for 1.5 models, latent frames otherwise.
      const auto latent_frames = e.at("latent_frames").get<int64_t>();
      const auto temporal_size = e.contains("temporal_size") ? e.at("temporal_size").get<int64_t>() : latent_frames;
      if (e.contains("patch_size_t") && !e.at("patch_size_t").is_null()) {
        const auto pt = e.at("patch_size_t").get<int64_t>();
        EXPECT_EQ(temporal_size, (latent_frames + pt - 1) / pt);
      }

      RotaryEmbedding rope;
      if (grid_type == "linspace") {
        const json& cc = e.at("crops_coords");
        const CropRegion expected{cc.at(0).at(0).get<int64_t>(), cc.at(0).at(1).get<int64_t>(),
                                  cc.at(1).at(0).get<int64_t>(), cc.at(1).at(1).get<int64_t>()};
        const CropRegion crops = resize_crop_region_for_grid(grid_h, grid_w, base_w, base_h);
        EXPECT_EQ(crops, expected) << "got ((" << crops.top << ", " << crops.left << "), (" << crops.bottom << ", "
                                   << crops.right << "))";
        rope = rotary_pos_embed_3d(head_dim, expected, grid_h, grid_w, temporal_size, grid_type);
      } else {
        rope = rotary_pos_embed_3d(head_dim, std::nullopt, grid_h, grid_w, temporal_size, grid_type,
                                   std::make_pair(base_h, base_w));
      }
      const std::string prefix = "rope." + std::to_string(index) + ".";
      EXPECT_TRUE(bit_equal(rope.cos, c.tensor(prefix + "cos"))) << prefix << "cos";
      EXPECT_TRUE(bit_equal(rope.sin, c.tensor(prefix + "sin"))) << prefix << "sin";
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no rope entries in the golden meta.json";
}

TEST(EmbeddingsGolden, SincosTable3d) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = embedding_cases();
  if (cases.empty()) GTEST_SKIP() << "no golden case " << kCase;
  int checked = 0;
  for (const auto& c : cases) {
    const auto& list = c.meta.contains("sincos3d") ? c.meta.at("sincos3d") : json::array();
    for (size_t k = 0; k < list.size(); ++k) {
      const json& e = list[k];
      const int64_t index = entry_index(e, k);
      SCOPED_TRACE(c.name + " sincos3d[" + std::to_string(index) + "] " + e.dump());
      const json& wh = e.at("spatial_size_w_h");
      const auto table =
          sincos_pos_embed_3d(e.at("embed_dim").get<int64_t>(), wh.at(1).get<int64_t>(), wh.at(0).get<int64_t>(),
                              e.at("temporal_size").get<int64_t>(), e.at("spatial_interpolation_scale").get<double>(),
                              e.at("temporal_interpolation_scale").get<double>());
      const auto expected = c.tensor("sincos3d." + std::to_string(index));
      EXPECT_EQ(table.scalar_type(), torch::kFloat64);
      if (e.contains("shape")) EXPECT_EQ(table.sizes().vec(), e.at("shape").get<std::vector<int64_t>>());
      EXPECT_TRUE(test::all_close(table, expected, 1e-15, 0.0));
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no sincos3d entries in the golden meta.json";
}

TEST(EmbeddingsGolden, TimestepEmbedding) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = embedding_cases();
  if (cases.empty()) GTEST_SKIP() << "no golden case " << kCase;
  int checked = 0;
  for (const auto& c : cases) {
    const auto& list = c.meta.contains("timestep_embedding") ? c.meta.at("timestep_embedding") : json::array();
    if (list.empty()) continue;
    const auto timesteps = c.tensor("timestep_embedding.timesteps");
    for (size_t k = 0; k < list.size(); ++k) {
      const json& e = list[k];
      const int64_t index = entry_index(e, k);
      SCOPED_TRACE(c.name + " timestep_embedding[" + std::to_string(index) + "] " + e.dump());
      const auto emb =
          timestep_embedding(timesteps, e.at("embedding_dim").get<int64_t>(), e.at("flip_sin_to_cos").get<bool>(),
                             e.at("downscale_freq_shift").get<double>());
      EXPECT_TRUE(bit_equal(emb, c.tensor("timestep_embedding." + std::to_string(index))));
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no timestep_embedding entries in the golden meta.json";
}

// `timestep_embedding.ofs_<value>`: the embedding of a single ofs value (1.5-I2V), width from the tensor's
// shape, with the Timesteps settings that every listed timestep_embedding entry shares.
TEST(EmbeddingsGolden, OfsEmbedding) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = embedding_cases();
  const std::string prefix = "timestep_embedding.ofs_";
  int checked = 0;
  for (const auto& c : cases) {
    if (!c.data) continue;
    const auto& list = c.meta.contains("timestep_embedding") ? c.meta.at("timestep_embedding") : json::array();
    if (list.empty()) continue;
    const bool flip = list.at(0).at("flip_sin_to_cos").get<bool>();
    const double shift = list.at(0).at("downscale_freq_shift").get<double>();
    bool uniform = true;
    for (const auto& e : list)
      uniform =
          uniform && e.at("flip_sin_to_cos").get<bool>() == flip && e.at("downscale_freq_shift").get<double>() == shift;
    if (!uniform) continue;
    for (const auto& name : c.data->names()) {
      if (name.rfind(prefix, 0) != 0) continue;
      SCOPED_TRACE(c.name + " " + name);
      char* end = nullptr;
      const std::string value_text = name.substr(prefix.size());
      const double ofs = std::strtod(value_text.c_str(), &end);
      ASSERT_TRUE(end && *end == '\0' && !value_text.empty()) << "cannot read the ofs value of " << name;
      const auto expected = c.tensor(name);
      ASSERT_EQ(expected.dim(), 2);
      const auto emb =
          timestep_embedding(torch::full({expected.size(0)}, ofs, torch::kFloat32), expected.size(1), flip, shift);
      EXPECT_TRUE(bit_equal(emb, expected));
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no timestep_embedding.ofs_* tensors in the golden data";
}

}  // namespace
}  // namespace cvx
