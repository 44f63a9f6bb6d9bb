// Parity of compute_training_loss with the official finetune compute_loss for every loss case of
// the golden set: the case's recorded draws are fed in, every recorded intermediate and output is
// compared.
//
// Tolerances (rtol 1e-4 throughout, plus):
//   model_pred: the README's suggested atol for the case (else 30 x its observed error, >= 1e-5).
//   latent_pred = sqrt(a) x_t - sqrt(1 - a) pred: the model_pred atol (the pred enters with a
//     factor <= 1, the x_t term is the same float32 product as the reference's).
//   latent: bit-exact (a copy and a permutation). noisy_latents: 1e-6 (float32 tensors times
//     float64 scalars rounded to float32, as the README states for the scheduler).
//   image_latents: the VAE encoder's suggested latent_mean atol (5e-5, the vae/* rows), since they
//     are that encoder's posterior sampled and scaled by 0.7; transformer_input: the larger of its
//     two parts' tolerances.
//   weights: rtol 1e-12 (the same float64 table computed the same way agrees to ~1e-15).
//   per_sample_loss_b: the bound of a model_pred deviation of `atol` everywhere: d = x0_hat - x0,
//     |x0_hat error| <= atol / sqrt(w) so |loss error| <= 2 sqrt(w) mean|d| atol + atol^2; loss: their mean.
#include <gtest/gtest.h>

#include "cvx/io/json_file.h"
#include "cvx/train/training_loss.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

double model_pred_atol(const cvx::test::GoldenCase& c) {
  double fallback = 1e-5;
  if (c.meta.contains("observed") && c.meta["observed"].contains("model_pred"))
    fallback = std::max(1e-5, 30 * c.meta["observed"]["model_pred"]["max_abs_fp32_vs_fp64"].get<double>());
  return cvx::test::golden_atol(c.name, "model_pred", fallback);
}

struct CaseRun {
  cvx::TransformerConfig config;
  cvx::LossOutputs out;
};

CaseRun run_case(const cvx::test::GoldenCase& c) {
  CaseRun r;
  auto model = cvx::load_transformer(c.dir / c.meta.at("model_dir").get<std::string>(), torch::kFloat32);
  model->eval();
  r.config = model->config;
  const cvx::CogVideoXScheduler scheduler(
      cvx::SchedulerConfig::from_json(c.meta.at("scheduler").at("config"), c.name + " scheduler"));

  cvx::LossInputs in;
  in.latents = c.tensor("input.encoded_videos");
  in.prompt_embeds = c.tensor("input.prompt_embedding");
  cvx::LossDraws draws;
  draws.timesteps = c.tensor("input.timesteps");
  draws.noise = c.tensor("input.noise");
  cvx::LossOptions options;
  options.i2v = r.config.is_i2v();
  cvx::AutoencoderKLCogVideoX vae{nullptr};
  if (options.i2v) {
    vae = cvx::load_vae(c.dir / c.meta.at("vae_dir").get<std::string>(), torch::kFloat32);
    vae->eval();
    options.image_scale = cvx::ImageLatentScale::multiply;  // the official trainer
    options.vae_scaling_factor = vae->config.scaling_factor;
    in.images = c.tensor("input.images");
    draws.image_noise_sigma = c.tensor("input.image_noise_sigma");
    draws.image_noise = c.tensor("input.image_noise");
    draws.image_latent_eps = c.tensor("input.image_latent_eps");
  }
  r.out = cvx::compute_training_loss(model, scheduler, in, draws, options, vae ? &vae : nullptr);
  return r;
}

}  // namespace

TEST(LossGolden, OutputsAndIntermediatesMatchTheFinetuneRecipe) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("loss");
  ASSERT_FALSE(cases.empty()) << "the golden manifest lists no loss case";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto [config, out] = run_case(c);
    using cvx::test::all_close;
    const double atol = model_pred_atol(c);
    const double image_atol = cvx::test::golden_atol(c.name, "image_latents", 5e-5);

    EXPECT_TRUE(torch::equal(out.latent.contiguous(), c.tensor("inter.latent"))) << "inter.latent";
    EXPECT_TRUE(all_close(out.noisy_latents, c.tensor("inter.noisy_latents"), 1e-6)) << "inter.noisy_latents";
    if (config.is_i2v()) {
      ASSERT_TRUE(c.has("inter.image_latents"));
      EXPECT_TRUE(all_close(out.image_latents, c.tensor("inter.image_latents"), image_atol)) << "inter.image_latents";
    }
    EXPECT_TRUE(
        all_close(out.transformer_input, c.tensor("inter.transformer_input"), config.is_i2v() ? image_atol : 1e-6))
        << "inter.transformer_input";
    EXPECT_TRUE(all_close(out.model_pred, c.tensor("output.model_pred"), atol)) << "output.model_pred";
    EXPECT_TRUE(all_close(out.latent_pred, c.tensor("output.latent_pred"), atol)) << "output.latent_pred";

    const auto weights = c.tensor("output.weights");
    EXPECT_EQ(out.weights.scalar_type(), torch::kFloat64);
    EXPECT_TRUE(all_close(out.weights, weights, 0.0, 1e-12)) << "output.weights";

    const int64_t batch = weights.size(0);
    const auto d = (c.tensor("output.latent_pred") - c.tensor("inter.latent")).abs().reshape({batch, -1}).mean(1);
    const auto loss_atol = 2 * weights.sqrt() * d.to(torch::kFloat64) * atol + atol * atol;  // [B]
    const auto expected_per_sample = c.tensor("output.per_sample_loss");
    ASSERT_EQ(out.per_sample_loss.scalar_type(), torch::kFloat64);
    ASSERT_EQ(out.per_sample_loss.sizes(), expected_per_sample.sizes());
    EXPECT_TRUE(((out.per_sample_loss - expected_per_sample).abs() <= loss_atol + 1e-4 * expected_per_sample.abs())
                    .all()
                    .item<bool>())
        << "output.per_sample_loss: got " << out.per_sample_loss << ", expected " << expected_per_sample
        << ", per-sample atol " << loss_atol;
    EXPECT_EQ(out.loss.scalar_type(), torch::kFloat64);
    EXPECT_TRUE(all_close(out.loss, c.tensor("output.loss"), loss_atol.mean().item<double>())) << "output.loss";
  }
}

TEST(LossGolden, TrainingRotaryTablesMatch) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("loss")) {
    if (!c.has("inter.image_rotary_emb.cos")) continue;
    SCOPED_TRACE(c.name);
    const auto config = cvx::TransformerConfig::from_json(
        cvx::read_json_file(c.dir / c.meta.at("model_dir").get<std::string>() / "config.json"));
    const auto latent = c.tensor("inter.latent");  // [B, F, C, h, w]
    const auto rope = cvx::training_rotary_embedding(config, latent.size(3), latent.size(4), latent.size(1));
    EXPECT_TRUE(torch::equal(rope.cos, c.tensor("inter.image_rotary_emb.cos")));
    EXPECT_TRUE(torch::equal(rope.sin, c.tensor("inter.image_rotary_emb.sin")));
  }
}
