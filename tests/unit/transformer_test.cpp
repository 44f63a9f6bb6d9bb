// Properties of the transformer that the golden set does not pin down.
#include <gtest/gtest.h>

#include "cvx/io/model_folder.h"
#include "cvx/model/lora.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/model/transformer.h"
#include "test_util.h"

namespace {

const std::vector<std::string> kVariants{"2b", "5b", "5b-i2v", "1.5-t2v", "1.5-i2v"};

struct Batch {
  torch::Tensor latents, text, timestep;
  std::optional<torch::Tensor> ofs;
  cvx::RotaryEmbedding rope;
};

// A batch at the model's sample size (what the learned table of 5b-I2V requires).
Batch batch_for(const cvx::TransformerConfig& c, int64_t batch = 2) {
  Batch b;
  const int64_t frames = c.patch_size_t ? 4 : (c.sample_frames - 1) / c.temporal_compression_ratio + 1;
  const int64_t h = c.use_learned_positional_embeddings ? c.sample_height : 6;
  const int64_t w = c.use_learned_positional_embeddings ? c.sample_width : 8;
  b.latents = torch::randn({batch, frames, c.in_channels, h, w});
  b.text = torch::randn({batch, c.max_text_seq_length, c.text_embed_dim});
  b.timestep = torch::randint(0, 1000, {batch}, torch::kLong);
  if (c.ofs_embed_dim) b.ofs = torch::full({1}, 2.0);
  b.rope = cvx::training_rotary_embedding(c, h, w, frames);
  return b;
}

torch::Tensor run(cvx::CogVideoXTransformer& m, const Batch& b) {
  return m->forward(b.latents, b.text, b.timestep, b.ofs, b.rope.cos.defined() ? &b.rope : nullptr);
}

}  // namespace

TEST(Transformer, EveryVariantMapsLatentsToVelocityOfTheSameShape) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 1);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto out = run(m, b);
    auto expected = b.latents.sizes().vec();
    expected[2] = m->config.out_channels;
    EXPECT_EQ(out.sizes().vec(), expected);
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  }
}

TEST(Transformer, LoraWithZeroBEqualsTheBaseModelExactly) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 2);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto base = run(m, b);
    cvx::LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 2;
    lora.target_modules = {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "proj_out"};
    cvx::inject_lora(*m, lora);
    EXPECT_TRUE(torch::equal(run(m, b), base));
  }
}

TEST(Transformer, GradientCheckpointingGivesTheSameGradients) {
  auto m = cvx::make_tiny_transformer("5b", 3);
  const Batch b = batch_for(m->config);
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    auto latents = b.latents.clone().requires_grad_(true);
    Batch with_grad = b;
    with_grad.latents = latents;
    run(m, with_grad).pow(2).mean().backward();
    std::vector<torch::Tensor> grads{latents.grad().clone()};
    for (const auto& p : m->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_EQ(plain[i].defined(), recomputed[i].defined()) << i;
    if (plain[i].defined()) EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-7)) << "gradient " << i;
  }
}

// bf16 weights and activations stay within 3% of the fp32 output's range (measured ~1%).
TEST(Transformer, Bf16IsCloseToFp32) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 4);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto reference = run(m, b);
    m->to(torch::kBFloat16);
    const auto low = run(m, b);
    EXPECT_EQ(low.scalar_type(), torch::kBFloat16);
    const double error = (low.to(torch::kFloat32) - reference).abs().max().item<double>();
    EXPECT_LE(error, 0.03 * reference.abs().max().item<double>()) << "max abs error " << error;
  }
}

TEST(Transformer, SavedTinyFolderLoadsBackIdentically) {
  const auto dir = cvx::test::scratch_dir("tiny_transformer");
  cvx::write_tiny_pipeline(dir, "1.5-i2v", 5);
  auto original = cvx::make_tiny_transformer("1.5-i2v", 5);
  auto loaded = cvx::load_transformer(dir / "transformer");
  const Batch b = batch_for(original->config);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(run(original, b), run(loaded, b)));
  auto bf16 = cvx::load_transformer(dir / "transformer", torch::kBFloat16);
  EXPECT_EQ(bf16->dtype(), torch::kBFloat16);
}

// LoRA on a frozen base: checkpointed blocks still deliver the adapter gradients, equal to the
// gradients without checkpointing.
TEST(Transformer, CheckpointingTrainsLoraOnAFrozenBase) {
  auto m = cvx::make_tiny_transformer("1.5-t2v", 6);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  for (auto& p : cvx::lora_parameters(*m)) p.data().normal_(0, 0.1);
  const Batch b = batch_for(m->config);
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    run(m, b).pow(2).mean().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : cvx::lora_parameters(*m)) {
      EXPECT_TRUE(p.grad().defined());
      grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    }
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_GT(plain[i].abs().max().item<double>(), 0.0) << i;
    EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-7)) << "adapter gradient " << i;
  }
  for (const auto& p : m->parameters())
    if (!p.requires_grad()) EXPECT_FALSE(p.grad().defined());
}

// The memory-saving layout: frozen base in bf16, LoRA masters in fp32; gradients land on the fp32
// adapters. fp16 runs where the backend has fp16 kernels (CUDA; libtorch 1.13's CPU has none).
TEST(Transformer, Bf16BaseWithFp32Lora) {
  auto m = cvx::make_tiny_transformer("5b", 7);
  m->to(torch::kBFloat16);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  m->set_gradient_checkpointing(true);
  const Batch b = batch_for(m->config);
  const auto out = run(m, b);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  out.to(torch::kFloat32).pow(2).mean().backward();
  for (const auto& p : cvx::lora_parameters(*m)) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
  }
}

TEST(Transformer, Fp16WhereTheBackendHasKernels) {
  auto half = cvx::make_tiny_transformer("2b", 7);
  half->to(torch::kFloat16);
  try {
    torch::NoGradGuard no_grad;
    const auto y = run(half, batch_for(half->config));
    EXPECT_EQ(y.scalar_type(), torch::kFloat16);
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  } catch (const c10::Error& e) {
    if (std::string(e.what()).find("Half") == std::string::npos) throw;
    GTEST_SKIP() << "no fp16 kernels on this backend: " << std::string(e.what()).substr(0, 80);
  }
}
