// A small latent store's arguments and its deterministic contents, shared by the unit and MPI tests.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cvx/data/latent_store.h"

namespace cvx::test {

inline StoreHeader small_store_header() {
  StoreHeader h;
  h.model_path = "/models/CogVideoX-2b";
  h.model_fingerprint = "fp-0123456789abcdef";
  h.variant = "i2v";
  h.frames = 9;
  h.height = 32;
  h.width = 48;
  h.latent_shape = {4, 3, 4, 6};
  h.frame_sampling = "uniform";
  h.resize_mode = "crop";
  h.vae_scaling_factor = 1.15258426;
  h.invert_scale_latents = false;
  h.max_text_length = 5;
  h.text_embed_dim = 8;
  return h;
}

// `n` samples over `prompts` prompt rows, round robin.
inline std::vector<SampleEntry> small_store_samples(int64_t n, int64_t prompts) {
  std::vector<SampleEntry> samples;
  for (int64_t i = 0; i < n; ++i) {
    SampleEntry e;
    e.id = 100 + i;
    e.media_path = "videos/clip_" + std::to_string(i) + (i % 2 ? "_long_name.mp4" : ".mp4");
    e.prompt_row = i % prompts;
    samples.push_back(e);
  }
  return samples;
}

inline std::vector<std::string> small_store_prompts(int64_t n) {
  std::vector<std::string> prompts;
  for (int64_t p = 0; p < n; ++p) prompts.push_back("a prompt number " + std::to_string(p) + std::string(p * 3, '!'));
  return prompts;
}

// Every bit pattern matters: random 16-bit words viewed as bf16 (NaNs included), or smooth float32.
inline torch::Tensor store_test_tensor(std::vector<int64_t> shape, int64_t seed, torch::Dtype dtype) {
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) + 1);
  if (dtype == torch::kBFloat16) {
    return torch::randint(0, 1 << 16, shape, generator, torch::kInt32).to(torch::kInt16).view(torch::kBFloat16);
  }
  return torch::randn(shape, generator, torch::kFloat32);
}

// Bitwise equality (NaN patterns included).
inline bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto as_int = a.element_size() == 2 ? torch::kInt16 : torch::kInt32;
  return torch::equal(a.contiguous().view(as_int), b.contiguous().view(as_int));
}

}  // namespace cvx::test
