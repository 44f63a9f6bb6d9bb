// Encode and decode with the released CogVideoX VAE architecture (block_out_channels 128-256-256-512,
// 3 layers per block, 16 latent channels, random weights) on the CPU, fp32, at a small clip size
// so it runs in seconds on 2 threads. Prints one JSON line: median and min ms per pixel frame of
// encode and decode over the timed runs after one warm-up.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cvx/core/host_memory.h"
#include "cvx/model/vae.h"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  const int64_t frames = argc > 3 ? std::atoll(argv[3]) : 9;
  const int64_t size = argc > 4 ? std::atoll(argv[4]) : 64;
  cvx::tune_host_allocator();  // as every cvx program does
  torch::set_num_threads(threads);
  torch::manual_seed(0);

  cvx::AutoencoderKLCogVideoX vae(cvx::cogvideox_vae_5b());
  vae->eval();
  const auto video = torch::rand({1, 3, frames, size, size}) * 2 - 1;  // [B, 3, F, H, W]
  const auto latents = vae->encode(video).mean;                        // warm-up of both paths
  vae->decode(latents);

  auto time_ms = [&](auto&& fn) {
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
      const auto start = std::chrono::steady_clock::now();
      fn();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() /
                   frames);
    }
    std::sort(ms.begin(), ms.end());
    return std::make_pair(ms[ms.size() / 2], ms.front());
  };
  const auto encode = time_ms([&] { vae->encode(video); });
  const auto decode = time_ms([&] { vae->decode(latents); });
  std::printf(
      "{\"benchmark\": \"vae_cpu\", \"threads\": %d, \"runs\": %d, \"frames\": %lld, \"height\": %lld, "
      "\"width\": %lld, \"encode_ms_per_frame_median\": %.1f, \"encode_ms_per_frame_min\": %.1f, "
      "\"decode_ms_per_frame_median\": %.1f, \"decode_ms_per_frame_min\": %.1f, \"torch\": \"%s\"}\n",
      threads, runs, static_cast<long long>(frames), static_cast<long long>(size), static_cast<long long>(size),
      encode.first, encode.second, decode.first, decode.second, TORCH_VERSION);
  return 0;
}
