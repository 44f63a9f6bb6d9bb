// bench_train_setup OUT_DIR: a model folder for bench/train_cpu.sh — the tiny pipeline of
// cvx_make_tiny (VAE, T5, tokenizer, scheduler) with its transformer replaced by the shape of
// bench/transformer_cpu.cpp (4 layers, 4 heads x 32, in/out 16, time_embed 64, RoPE) and its VAE
// given 16 latent channels to match, random weights. text_embed_dim follows the tiny T5 (the bench
// transformer's 64 has no encoder to match).
#include <cstdio>

#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bench_train_setup OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  cvx::write_tiny_pipeline(dir, cvx::kVariant5b, 0);
  const auto t5 = cvx::read_json_file(dir / "text_encoder" / "config.json");
  torch::manual_seed(0);
  cvx::TransformerConfig c = cvx::transformer_preset(cvx::kVariant5b);
  c.num_layers = 4;
  c.num_attention_heads = 4;
  c.attention_head_dim = 32;
  c.in_channels = 16;
  c.out_channels = 16;
  c.text_embed_dim = t5.at("d_model").get<int64_t>();
  c.time_embed_dim = 64;
  cvx::CogVideoXTransformer model(c);
  cvx::save_component(dir / "transformer", c.to_json(), cvx::module_state(*model));
  // The tiny VAE with the transformer's 16 latent channels (the released VAE's), so its latents fit.
  cvx::VAEConfig vc = cvx::tiny_vae("5b");
  vc.latent_channels = c.out_channels;
  cvx::AutoencoderKLCogVideoX vae(vc);
  cvx::save_component(dir / "vae", vc.to_json(), cvx::module_state(*vae));
  std::printf("bench_train_setup: %s (transformer %lld layers, %lld x %lld heads)\n", dir.c_str(),
              static_cast<long long>(c.num_layers), static_cast<long long>(c.num_attention_heads),
              static_cast<long long>(c.attention_head_dim));
  return 0;
}
