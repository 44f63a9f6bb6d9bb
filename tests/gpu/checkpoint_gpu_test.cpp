// Recomputation on CUDA: dropout masks are drawn from the device's generator, which the
// recomputation node must replay (not only the CPU generator), or checkpointed LoRA-dropout
// gradients are silently wrong. Needs a CUDA device; skips otherwise.
#include <gtest/gtest.h>

#include "cvx/core/recompute.h"
#include "cvx/model/lora.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/model/transformer.h"

TEST(RecomputeGpu, CheckpointingWithLoraDropoutOnCudaGivesTheGradientsOfNoCheckpointing) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  auto m = cvx::make_tiny_transformer("5b", 12);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  lora.dropout = 0.5;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  for (auto& p : cvx::lora_parameters(*m)) p.data().normal_(0, 0.1);
  m->to(gpu);
  m->train();
  const auto& c = m->config;
  const auto latents = torch::randn({2, 3, c.in_channels, 6, 8}).to(gpu);
  const auto text = torch::randn({2, 12, c.text_embed_dim}).to(gpu);
  const auto t = torch::tensor({10, 900}, torch::kLong).to(gpu);
  const auto rope = cvx::training_rotary_embedding(c, 6, 8, 3);
  const cvx::RotaryEmbedding rope_gpu{rope.cos.to(gpu), rope.sin.to(gpu)};
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    torch::manual_seed(77);
    torch::cuda::manual_seed_all(77);
    m->forward(latents, text, t, std::nullopt, &rope_gpu).pow(2).mean().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : cvx::lora_parameters(*m)) grads.push_back(p.grad().cpu().clone());
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-6)) << "adapter gradient " << i;
}

TEST(RecomputeGpu, RngSnapshotReplaysTheDeviceGenerator) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  torch::cuda::manual_seed_all(5);
  const auto snapshot = cvx::RngSnapshot::capture(gpu);
  const auto first = torch::rand({16}, torch::TensorOptions().device(gpu)).cpu();
  const auto previous = snapshot.replay();
  const auto again = torch::rand({16}, torch::TensorOptions().device(gpu)).cpu();
  previous.replay();
  EXPECT_TRUE(torch::equal(first, again));
}
