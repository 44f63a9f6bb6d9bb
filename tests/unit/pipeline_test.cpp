// Properties of the sampling pipeline on a tiny model folder.
#include <gtest/gtest.h>

#include "cvx/model/lora.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/pipeline/video_pipeline.h"
#include "test_util.h"

namespace {
cvx::GenerateRequest small_request() {
  cvx::GenerateRequest r;
  r.prompt = "a red ball";
  r.height = 32;
  r.width = 48;
  r.num_frames = 9;
  r.denoise.num_inference_steps = 2;
  r.seed = 7;
  return r;
}
}  // namespace

TEST(Pipeline, LoraAtScaleZeroEqualsTheBaseModel) {
  const auto dir = cvx::test::scratch_dir("pipeline_lora");
  cvx::write_tiny_pipeline(dir, "5b", 3);
  auto pipeline = cvx::VideoPipeline::load(dir, torch::kFloat32);
  const auto base = pipeline.generate(small_request()).video;

  // A trained-looking adapter (B non-zero), exported and loaded back at multiplier 0.
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  auto donor = cvx::make_tiny_transformer("5b", 3);
  cvx::inject_lora(*donor, lora);
  for (auto& p : cvx::lora_parameters(*donor)) p.data().normal_(0, 0.3);
  cvx::save_lora_diffusers(dir / "lora.safetensors", *donor);

  cvx::load_lora(*pipeline.transformer, dir / "lora.safetensors", 0.0);
  EXPECT_TRUE(torch::equal(pipeline.generate(small_request()).video, base));
  cvx::set_lora_multiplier(*pipeline.transformer, 1.0);
  EXPECT_FALSE(torch::equal(pipeline.generate(small_request()).video, base)) << "the adapter has an effect";
}

TEST(Pipeline, SameSeedSameVideoAndGeometryDefaults) {
  const auto dir = cvx::test::scratch_dir("pipeline_seed");
  cvx::write_tiny_pipeline(dir, "1.5-t2v", 4);
  auto pipeline = cvx::VideoPipeline::load(dir, torch::kFloat32);
  const auto a = pipeline.generate(small_request());
  const auto b = pipeline.generate(small_request());
  EXPECT_TRUE(torch::equal(a.video, b.video));
  EXPECT_EQ(a.video.sizes(), (std::vector<int64_t>{9, 3, 32, 48}));
  EXPECT_EQ(a.final_latents.size(1), 4) << "1.5: 3 latent frames padded to 4";
  cvx::GenerateRequest defaults;
  pipeline.resolve_geometry(defaults);
  EXPECT_EQ(defaults.height, 768);
  EXPECT_EQ(defaults.width, 1360);
}
