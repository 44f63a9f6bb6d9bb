// The denoising loop of every pipeline case of the golden set, fed the reference's prompt
// embeddings, initial latents and image latents: per-step transformer inputs/outputs, guided
// predictions and latents, and the final latents.
#include <gtest/gtest.h>

#include "cvx/diffusion/scheduler.h"
#include "cvx/io/model_folder.h"
#include "cvx/pipeline/denoise.h"
#include "golden_util.h"
#include "test_util.h"

namespace {
// README: per-step records allow tight (1e-4) checks; end-to-end outputs accumulate error (~1e-3).
constexpr double kStepAtol = 1e-4;
constexpr double kEndToEndAtol = 1e-3;
}  // namespace

TEST(PipelineGolden, DenoisingLoopMatchesStepByStep) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("pipeline");
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto dir = c.dir / c.meta.at("pipeline_dir").get<std::string>();
    auto transformer = cvx::load_transformer(dir / "transformer");
    transformer->eval();
    cvx::CogVideoXScheduler scheduler(cvx::SchedulerConfig::from_json(c.meta.at("scheduler_config")));
    const auto& call = c.meta.at("call");
    cvx::DenoiseOptions options;
    options.num_inference_steps = call.at("num_inference_steps");
    options.guidance_scale = call.at("guidance_scale");
    options.use_dynamic_cfg = call.at("use_dynamic_cfg");
    EXPECT_EQ(scheduler.set_timesteps(options.num_inference_steps), c.meta.at("timesteps").get<std::vector<int64_t>>());

    cvx::RotaryEmbedding rope;
    if (c.has("inter.image_rotary_emb.cos")) {
      rope = {c.tensor("inter.image_rotary_emb.cos"), c.tensor("inter.image_rotary_emb.sin")};
      const auto& shapes = c.meta.at("shapes");
      const auto mine = cvx::pipeline_rotary_embedding(
          transformer->config, call.at("height"), call.at("width"),
          shapes.value("latent_frames_padded", shapes.at("latent_frames").get<int64_t>()));
      EXPECT_TRUE(torch::equal(mine.cos, rope.cos)) << "pipeline rotary table";
    }
    std::optional<torch::Tensor> ofs;
    if (c.has("inter.ofs")) ofs = c.tensor("inter.ofs");
    const auto image_latents = c.has("inter.image_latents") ? c.tensor("inter.image_latents") : torch::Tensor();

    // Scheduler noise as recorded, in draw order.
    std::vector<torch::Tensor> draws;
    for (size_t i = 0; i < c.meta.at("timesteps").size(); ++i)
      for (const char* name : {"noise_a", "noise_b"})
        if (c.has("step." + std::to_string(i) + "." + name))
          draws.push_back(c.tensor("step." + std::to_string(i) + "." + name));
    size_t next_draw = 0;
    auto noise = [&](const torch::Tensor&) { return draws.at(next_draw++); };

    const auto expected_w = c.meta.at("guidance_scale_per_step").get<std::vector<double>>();
    size_t steps_seen = 0;
    auto check_step = [&](const cvx::DenoiseStep& s) {
      SCOPED_TRACE("step " + std::to_string(s.index));
      const std::string p = "step." + std::to_string(s.index) + ".";
      EXPECT_NEAR(s.guidance, expected_w.at(s.index), 1e-12);
      EXPECT_TRUE(cvx::test::all_close(s.transformer_input, c.tensor(p + "transformer_input"), kStepAtol));
      EXPECT_TRUE(cvx::test::all_close(s.transformer_output, c.tensor(p + "transformer_output"), kStepAtol));
      EXPECT_TRUE(cvx::test::all_close(s.noise_pred_guided, c.tensor(p + "noise_pred_guided"), kStepAtol));
      EXPECT_TRUE(cvx::test::all_close(s.latents, c.tensor(p + "latents"), kStepAtol));
      if (c.has(p + "pred_original_sample"))
        EXPECT_TRUE(cvx::test::all_close(s.pred_original_sample, c.tensor(p + "pred_original_sample"), kStepAtol));
      ++steps_seen;
    };
    const auto final_latents =
        cvx::denoise(transformer, scheduler, c.tensor("input.initial_latents"), c.tensor("inter.prompt_embeds"),
                     c.tensor("inter.negative_prompt_embeds"), image_latents, ofs, rope.cos.defined() ? &rope : nullptr,
                     options, noise, check_step);
    EXPECT_EQ(steps_seen, expected_w.size());
    EXPECT_EQ(next_draw, draws.size()) << "scheduler noise draws";
    EXPECT_TRUE(cvx::test::all_close(final_latents, c.tensor("output.final_latents"), kEndToEndAtol));
  }
}

#include "cvx/data/image_io.h"
#include "cvx/pipeline/video_pipeline.h"

// The whole pipeline from the case's own folder (tokenizer, T5, transformer, VAE): prompt in,
// frames out, with the case's seed driving the same generator draws as the reference.
TEST(PipelineGolden, EndToEndFromTheModelFolder) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("pipeline")) {
    SCOPED_TRACE(c.name);
    auto pipeline = cvx::VideoPipeline::load(c.dir / c.meta.at("pipeline_dir").get<std::string>(), torch::kFloat32);
    pipeline.scheduler_config = cvx::SchedulerConfig::from_json(c.meta.at("scheduler_config"));
    const auto& call = c.meta.at("call");
    cvx::GenerateRequest request;
    request.prompt = call.at("prompt");
    if (call.contains("negative_prompt") && call["negative_prompt"].is_string())
      request.negative_prompt = call["negative_prompt"];
    request.height = call.at("height");
    request.width = call.at("width");
    request.num_frames = call.at("num_frames");
    request.denoise.num_inference_steps = call.at("num_inference_steps");
    request.denoise.guidance_scale = call.at("guidance_scale");
    request.denoise.use_dynamic_cfg = call.at("use_dynamic_cfg");
    request.seed = call.at("generator_seed").get<uint64_t>();
    request.initial_latents = c.tensor("input.initial_latents");
    if (c.has("input.image_u8")) {
      request.image = c.tensor("input.image_u8");
      // The PNG the reference read holds the same pixels.
      EXPECT_TRUE(torch::equal(cvx::read_image(c.dir / "input_image.png"), request.image));
    }
    const auto result = pipeline.generate(request);
    EXPECT_TRUE(cvx::test::all_close(result.prompt_embeds, c.tensor("inter.prompt_embeds"), kStepAtol)) << "prompt";
    if (c.has("inter.image_latents"))
      EXPECT_TRUE(cvx::test::all_close(result.image_latents, c.tensor("inter.image_latents"), kStepAtol)) << "image";
    EXPECT_TRUE(cvx::test::all_close(result.final_latents, c.tensor("output.final_latents"),
                                     cvx::test::golden_atol(c.name, "final_latents", kEndToEndAtol)));
    EXPECT_TRUE(cvx::test::all_close(result.video.unsqueeze(0), c.tensor("output.video"),
                                     cvx::test::golden_atol(c.name, "decoded", kEndToEndAtol)))
        << "video";
  }
}
