// Properties of the training loss that the golden loss cases do not pin down: the draws, the
// v-MSE identity, 1.5 padding, image-latent modes and dropout, dtypes and gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/train/training_loss.h"

namespace {

constexpr int64_t kBatch = 2, kChannels = 4, kHeight = 6, kWidth = 8;  // tiny latents; pixels 48 x 64

cvx::LossDraws draws_for(const cvx::TransformerConfig& c, int64_t frames, uint64_t seed, bool encode = true,
                         double dropout = 0.0, int64_t batch = kBatch) {
  return cvx::draw_loss_randoms(at::detail::createCPUGenerator(seed), c, batch, kChannels, frames, kHeight, kWidth,
                                8 * kHeight, 8 * kWidth, c.is_i2v(), encode, dropout);
}

cvx::LossInputs inputs_for(const cvx::TransformerConfig& c, int64_t frames, uint64_t seed, int64_t batch = kBatch) {
  torch::manual_seed(seed);
  cvx::LossInputs in;
  in.latents = torch::randn({batch, kChannels, frames, kHeight, kWidth});
  in.prompt_embeds = torch::randn({batch, c.max_text_seq_length, c.text_embed_dim});
  if (c.is_i2v()) in.image_moments = torch::randn({batch, 2 * kChannels, 1, kHeight, kWidth});
  return in;
}

cvx::LossOptions options_for(const cvx::TransformerConfig& c) {
  cvx::LossOptions o;
  o.i2v = c.is_i2v();
  return o;
}

const cvx::CogVideoXScheduler& scheduler() {
  static const cvx::CogVideoXScheduler s(cvx::scheduler_config_5b());
  return s;
}

// How far the weighted x0 loss may sit from the plain v-MSE, relative, per sample [B]: add_noise and
// get_velocity use the float32 rounding of a_t (error <= 2^-24), while the float64 weight divides
// by the exact 1 - a_t, so the sqrt(1 - a_t)^2 factor is off by up to 2^-24 / (1 - a_t) (~7e-5 at
// t = 0, where 1 - a_t = 8.5e-4), twice over (x_t and x0_hat); plus 1e-6 for the other roundings.
torch::Tensor identity_rtol(const torch::Tensor& t) {
  return 1e-6 + 2 * std::ldexp(1.0, -24) * scheduler().loss_weights(t);
}

::testing::AssertionResult relatively_close(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& rtol) {
  const auto rel = ((a - b).abs() / b.abs()).to(torch::kFloat64);
  if ((rel <= rtol).all().item<bool>()) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << "relative errors " << rel << " exceed " << rtol;
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace

TEST(TrainingLoss, PaddedLatentFramesPrependsToAMultipleOfPatchSizeTOnlyFor15) {
  const auto c15 = cvx::tiny_transformer("1.5-t2v");
  const auto c5b = cvx::tiny_transformer("5b");
  EXPECT_EQ(cvx::padded_latent_frames(c15, 21), 22);
  EXPECT_EQ(cvx::padded_latent_frames(c15, 22), 22);
  EXPECT_EQ(cvx::padded_latent_frames(c15, 1), 2);
  EXPECT_EQ(cvx::padded_latent_frames(c5b, 13), 13);
}

TEST(TrainingLoss, DrawsAreReproducibleFromTheSeedWithTheStatedShapesAndRanges) {
  const auto c = cvx::tiny_transformer("1.5-i2v");
  const auto a = draws_for(c, 3, 7), b = draws_for(c, 3, 7), other = draws_for(c, 3, 8);
  for (auto field : {&cvx::LossDraws::timesteps, &cvx::LossDraws::noise, &cvx::LossDraws::image_noise_sigma,
                     &cvx::LossDraws::image_noise, &cvx::LossDraws::image_latent_eps, &cvx::LossDraws::image_keep})
    EXPECT_TRUE(torch::equal(a.*field, b.*field));
  EXPECT_FALSE(torch::equal(a.noise, other.noise));

  EXPECT_EQ(a.timesteps.scalar_type(), torch::kLong);
  EXPECT_EQ(a.timesteps.sizes(), (std::vector<int64_t>{kBatch}));
  EXPECT_GE(a.timesteps.min().item<int64_t>(), 0);
  EXPECT_LT(a.timesteps.max().item<int64_t>(), 1000);
  EXPECT_EQ(a.noise.sizes(), (std::vector<int64_t>{kBatch, 4, kChannels, kHeight, kWidth}));  // 3 frames padded to 4
  EXPECT_EQ(a.image_noise_sigma.sizes(), (std::vector<int64_t>{kBatch}));                     // one per sample
  EXPECT_GT(a.image_noise_sigma.min().item<float>(), 0.0f);
  EXPECT_EQ(a.image_noise.sizes(), (std::vector<int64_t>{kBatch, 3, 1, 8 * kHeight, 8 * kWidth}));
  EXPECT_EQ(a.image_latent_eps.sizes(), (std::vector<int64_t>{kBatch, kChannels, 1, kHeight, kWidth}));
  EXPECT_EQ(a.image_keep.scalar_type(), torch::kBool);
  EXPECT_TRUE(a.image_keep.all().item<bool>());  // dropout 0 keeps every image
  EXPECT_FALSE(draws_for(c, 3, 7, true, 1.0).image_keep.any().item<bool>());
}

TEST(TrainingLoss, ImageNoiseSigmaFollowsLogNormalMinus3Half) {
  const auto c = cvx::tiny_transformer("5b-i2v");
  const auto log_sigma = draws_for(c, 3, 1, true, 0.0, 4000).image_noise_sigma.log().to(torch::kFloat64);
  // 4000 samples: the mean's standard error is 0.5 / sqrt(4000) ~ 0.008.
  EXPECT_NEAR(log_sigma.mean().item<double>(), -3.0, 0.04);
  EXPECT_NEAR(log_sigma.std().item<double>(), 0.5, 0.03);
}

TEST(TrainingLoss, TextToVideoDrawsHaveNoImageFieldsAndCachedModeNoImageNoise) {
  const auto t2v = draws_for(cvx::tiny_transformer("5b"), 3, 1);
  EXPECT_FALSE(t2v.image_noise_sigma.defined() || t2v.image_noise.defined() || t2v.image_latent_eps.defined() ||
               t2v.image_keep.defined());
  const auto cached = draws_for(cvx::tiny_transformer("5b-i2v"), 3, 1, /*encode=*/false);
  EXPECT_FALSE(cached.image_noise_sigma.defined() || cached.image_noise.defined());
  EXPECT_TRUE(cached.image_latent_eps.defined() && cached.image_keep.defined());
}

TEST(TrainingLoss, ConcatenatedSingleSampleDrawsFormTheBatch) {
  const auto c = cvx::tiny_transformer("5b-i2v");
  auto first = draws_for(c, 3, 1, true, 0.0, 1), second = draws_for(c, 3, 2, true, 0.0, 1);
  second.image_noise_sigma = second.image_noise_sigma.reshape({1});
  const auto both = cvx::concatenate_loss_draws({first, second});
  EXPECT_EQ(both.timesteps.size(0), 2);
  EXPECT_TRUE(torch::equal(both.noise[1], second.noise[0]));
  EXPECT_TRUE(torch::equal(both.image_noise_sigma, torch::cat({first.image_noise_sigma, second.image_noise_sigma})));
  second.image_keep = torch::Tensor();
  EXPECT_THROW(cvx::concatenate_loss_draws({first, second}), cvx::Error);
}

TEST(TrainingLoss, WeightedX0LossEqualsThePlainVelocityMse) {
  // finetune.md §3: x0_hat - x0 = -sqrt(1 - a)(v_hat - v), so mean(w (x0_hat - x0)^2) = mean((v_hat - v)^2)
  // up to float32 rounding (identity_rtol: ~1e-6 for most t, ~1e-4 near t = 0).
  torch::manual_seed(3);
  const auto x0 = torch::randn({3, 2, 4, 6, 8}), noise = torch::randn_like(x0), v_hat = torch::randn_like(x0);
  const auto t = torch::tensor({0, 500, 999}, torch::kLong);
  const auto& s = scheduler();
  const auto x_t = s.add_noise(x0, noise, t);
  const auto x0_hat = s.get_velocity(v_hat, x_t, t);
  const auto w = s.loss_weights(t).reshape({-1, 1, 1, 1, 1});
  const auto weighted = (w * (x0_hat - x0).pow(2)).reshape({3, -1}).mean(1);
  const auto v = s.get_velocity(x0, noise, t);
  const auto plain = (v_hat - v).pow(2).to(torch::kFloat64).reshape({3, -1}).mean(1);
  EXPECT_TRUE(relatively_close(weighted, plain, identity_rtol(t)));
}

TEST(TrainingLoss, PerSampleLossIsTheVelocityMseOfTheModelPrediction) {
  for (const std::string variant : {"5b", "1.5-i2v"}) {
    SCOPED_TRACE(variant);
    auto model = cvx::make_tiny_transformer(variant, 1);
    const auto& c = model->config;
    const auto in = inputs_for(c, 3, 2);
    const auto d = draws_for(c, 3, 3, /*encode=*/false);
    torch::NoGradGuard no_grad;
    const auto out = cvx::compute_training_loss(model, scheduler(), in, d, options_for(c));
    const auto v = scheduler().get_velocity(out.latent, d.noise, d.timesteps);
    const auto plain = (out.model_pred - v).pow(2).to(torch::kFloat64).reshape({kBatch, -1}).mean(1);
    EXPECT_TRUE(relatively_close(out.per_sample_loss, plain, identity_rtol(d.timesteps)));
    EXPECT_NEAR(out.loss.item<double>(), out.per_sample_loss.mean().item<double>(), 1e-15);
    EXPECT_EQ(out.loss.scalar_type(), torch::kFloat64);
    EXPECT_EQ(out.loss.dim(), 0);
  }
}

TEST(TrainingLoss, Padding15PrependsTheFirstLatentFrame) {
  auto model = cvx::make_tiny_transformer("1.5-t2v", 1);
  const auto in = inputs_for(model->config, 3, 4);
  const auto d = draws_for(model->config, 3, 5);
  torch::NoGradGuard no_grad;
  const auto out = cvx::compute_training_loss(model, scheduler(), in, d, options_for(model->config));
  const auto video = in.latents.permute({0, 2, 1, 3, 4});  // [B, 3, C, h, w]
  ASSERT_EQ(out.latent.size(1), 4);
  EXPECT_TRUE(torch::equal(out.latent.select(1, 0), video.select(1, 0)));
  EXPECT_TRUE(torch::equal(out.latent.narrow(1, 1, 3), video));
  EXPECT_EQ(out.model_pred.sizes(), out.latent.sizes());
}

TEST(TrainingLoss, CachedImageLatentsAreThePosteriorSampleScaledInFrameZeroOnly) {
  auto model = cvx::make_tiny_transformer("5b-i2v", 1);
  const auto& c = model->config;
  const auto in = inputs_for(c, 3, 6);
  const auto d = draws_for(c, 3, 7, /*encode=*/false);
  const auto sample = cvx::LatentDistribution::from_moments(in.image_moments).sample(d.image_latent_eps);
  torch::NoGradGuard no_grad;
  auto options = options_for(c);
  options.vae_scaling_factor = 0.7;
  for (const auto scale : {cvx::ImageLatentScale::multiply, cvx::ImageLatentScale::divide}) {
    options.image_scale = scale;
    const auto out = cvx::compute_training_loss(model, scheduler(), in, d, options);
    const auto expected = scale == cvx::ImageLatentScale::multiply ? sample * 0.7 : sample / 0.7;  // [B, C, 1, h, w]
    EXPECT_TRUE(torch::allclose(out.image_latents.select(1, 0), expected.select(2, 0), 0, 1e-6));
    EXPECT_EQ(out.image_latents.narrow(1, 1, 2).abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(torch::equal(out.transformer_input.narrow(2, kChannels, kChannels), out.image_latents));
    EXPECT_TRUE(torch::equal(out.transformer_input.narrow(2, 0, kChannels), out.noisy_latents));
  }
}

TEST(TrainingLoss, NoisedImageDropoutZeroesTheDroppedSamplesImageLatents) {
  auto model = cvx::make_tiny_transformer("5b-i2v", 1);
  const auto& c = model->config;
  const auto in = inputs_for(c, 3, 8);
  auto d = draws_for(c, 3, 9, /*encode=*/false);
  d.image_keep = torch::tensor({true, false});
  torch::NoGradGuard no_grad;
  const auto out = cvx::compute_training_loss(model, scheduler(), in, d, options_for(c));
  EXPECT_GT(out.image_latents[0].abs().max().item<float>(), 0.0f);
  EXPECT_EQ(out.image_latents[1].abs().max().item<float>(), 0.0f);
}

TEST(TrainingLoss, EncodedImagesAreNoisedWithTheirOwnSamplesSigma) {
  auto model = cvx::make_tiny_transformer("5b-i2v", 1);
  auto vae = cvx::make_tiny_vae(2, "5b");
  const auto& c = model->config;
  auto in = inputs_for(c, 3, 10);
  in.image_moments = torch::Tensor();
  in.images = torch::rand({kBatch, 3, 8 * kHeight, 8 * kWidth}) * 2 - 1;
  auto d = draws_for(c, 3, 11);
  d.image_noise_sigma = torch::tensor({0.01f, 0.5f});
  torch::NoGradGuard no_grad;
  const auto out = cvx::compute_training_loss(model, scheduler(), in, d, options_for(c), &vae);
  for (int64_t b = 0; b < kBatch; ++b) {
    const auto noisy = in.images.narrow(0, b, 1).unsqueeze(2) + d.image_noise.narrow(0, b, 1) * d.image_noise_sigma[b];
    const auto expected = vae->encode(noisy).sample(d.image_latent_eps.narrow(0, b, 1)) * 0.7;  // [1, C, 1, h, w]
    EXPECT_TRUE(torch::allclose(out.image_latents.narrow(0, b, 1).select(1, 0), expected.select(2, 0), 1e-6, 1e-5))
        << "sample " << b;
  }
}

TEST(TrainingLoss, MisconfiguredImageConditioningIsRejected) {
  auto model = cvx::make_tiny_transformer("5b-i2v", 1);
  const auto& c = model->config;
  auto in = inputs_for(c, 3, 12);
  const auto d = draws_for(c, 3, 13, /*encode=*/false);
  auto t2v_options = options_for(c);
  t2v_options.i2v = false;
  EXPECT_THROW(cvx::compute_training_loss(model, scheduler(), in, d, t2v_options), cvx::Error);
  in.image_moments = torch::Tensor();
  EXPECT_THROW(cvx::compute_training_loss(model, scheduler(), in, d, options_for(c)), cvx::Error);
  in.images = torch::zeros({kBatch, 3, 8 * kHeight, 8 * kWidth});
  EXPECT_THROW(cvx::compute_training_loss(model, scheduler(), in, d, options_for(c)), cvx::Error);  // no VAE
}

TEST(TrainingLoss, LossBackpropagatesIntoEveryTransformerParameter) {
  for (const std::string variant : {"5b", "1.5-i2v"}) {
    SCOPED_TRACE(variant);
    auto model = cvx::make_tiny_transformer(variant, 1);
    const auto& c = model->config;
    const auto out = cvx::compute_training_loss(model, scheduler(), inputs_for(c, 3, 14), draws_for(c, 3, 15, false),
                                                options_for(c));
    out.loss.backward();
    for (const auto& p : model->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().max().item<float>(), 0.0f) << p.key();
    }
  }
}

TEST(TrainingLoss, TransformerRunsInItsComputeDtypeAndTheLossStaysFloat64) {
  auto model = cvx::make_tiny_transformer("5b", 1);
  model->to(torch::kBFloat16);
  const auto& c = model->config;
  torch::NoGradGuard no_grad;
  const auto out =
      cvx::compute_training_loss(model, scheduler(), inputs_for(c, 3, 16), draws_for(c, 3, 17), options_for(c));
  EXPECT_EQ(out.model_pred.scalar_type(), torch::kFloat32);
  EXPECT_EQ(out.latent_pred.scalar_type(), torch::kFloat32);
  EXPECT_EQ(out.per_sample_loss.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::isfinite(out.loss).item<bool>());
}
