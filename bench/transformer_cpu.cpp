// One LoRA training step of a small CogVideoX transformer on the CPU (forward + backward, gradient
// checkpointing, fp32), in the configuration the issue fixes so it compares with the reference
// Python implementation on the same machine. Prints one JSON line: median and min ms over 5 steps
// after one warm-up.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cvx/core/host_memory.h"
#include "cvx/model/lora.h"
#include "cvx/model/transformer.h"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  cvx::tune_host_allocator();  // as every cvx program does
  torch::set_num_threads(threads);
  torch::manual_seed(0);

  cvx::TransformerConfig c = cvx::cogvideox_5b();  // rotary embeddings, 2D conv patches
  c.num_layers = 4;
  c.num_attention_heads = 4;
  c.attention_head_dim = 32;
  c.in_channels = 16;
  c.out_channels = 16;
  c.text_embed_dim = 64;
  c.time_embed_dim = 64;
  cvx::CogVideoXTransformer model(c);
  model->set_gradient_checkpointing(true);
  cvx::LoraConfig lora;
  lora.rank = 16;
  lora.alpha = 16;
  lora.target_modules = {"to_q", "to_k", "to_v", "to_out.0"};
  cvx::inject_lora(*model, lora);
  cvx::mark_only_lora_trainable(*model);
  // A trained adapter is not zero; keep B random so its gradient path is exercised fully.
  for (auto& p : cvx::lora_parameters(*model)) p.data().normal_(0, 0.02);

  const auto latents = torch::randn({1, 3, 16, 32, 32});  // [B, T, C, H, W]
  const auto text = torch::randn({1, 32, 64});
  const auto timestep = torch::full({1}, 500, torch::kLong);
  const auto rope = cvx::training_rotary_embedding(c, 32, 32, 3);

  std::vector<double> ms;
  for (int i = 0; i <= steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    model->zero_grad();
    auto loss = model->forward(latents, text, timestep, std::nullopt, &rope).pow(2).mean();
    loss.backward();
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) ms.push_back(elapsed);  // step 0 is the warm-up
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "{\"benchmark\": \"transformer_cpu\", \"threads\": %d, \"steps\": %d, \"median_ms\": %.2f, \"min_ms\": %.2f, "
      "\"torch\": \"%s\"}\n",
      threads, steps, ms[ms.size() / 2], ms.front(), TORCH_VERSION);
  return 0;
}
