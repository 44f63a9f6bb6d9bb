// What `image_latents = encode` costs an I2V training rank: the released VAE encoder (random
// weights) held as cvx_train holds it — the encoder alone, materialised in the compute dtype, the
// decoder left unmaterialised — and one per-step encode of a noised first frame [1, 3, 1, H, W]
// with no gradients, tiled or not (diffusers' enable_tiling, the official trainer's default).
// Prints one JSON line: encoder weight bytes, the transient host memory of the encode (peak RSS
// during it minus RSS before it) and its time. One configuration per process, so peaks don't mix.
// usage: bench_i2v_encoder_cpu HEIGHT WIDTH fp32|bf16 TILING(0|1) [THREADS=2]
#include <torch/torch.h>

#include <malloc.h>
#include <sys/resource.h>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "cvx/core/host_memory.h"
#include "cvx/model/vae.h"

namespace {

uint64_t current_rss() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t peak_rss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench_i2v_encoder_cpu HEIGHT WIDTH fp32|bf16 TILING(0|1) [THREADS=2]\n");
    return 2;
  }
  const int64_t height = std::atoll(argv[1]), width = std::atoll(argv[2]);
  const std::string dtype_name = argv[3];
  const bool tiling = std::atoi(argv[4]) != 0;
  const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
  const torch::Dtype dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  cvx::tune_host_allocator();
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  const uint64_t rss_start = current_rss();
  cvx::AutoencoderKLCogVideoX vae(cvx::cogvideox_vae_5b(), cvx::ModuleInit::unmaterialized(dtype));
  uint64_t weight_bytes = 0;
  for (auto& p : vae->encoder->parameters()) {
    p.set_data(torch::randn(p.sizes(), torch::TensorOptions().dtype(torch::kFloat32)).mul_(0.02).to(dtype));
    weight_bytes += static_cast<uint64_t>(p.numel()) * p.element_size();
  }
  for (auto& b : vae->encoder->buffers()) {
    b.set_data(torch::zeros(b.sizes(), b.options().dtype(dtype)));
    weight_bytes += static_cast<uint64_t>(b.numel()) * b.element_size();
  }
  vae->eval();
  if (tiling) vae->enable_tiling();
  const auto image = (torch::rand({1, 3, 1, height, width}) * 2 - 1).to(dtype);  // [B, 3, 1, H, W]
  // torch::nn builds every Conv3d in fp32 before it is replaced (decoder included): hand that freed
  // heap back, so the encode's growth counts from what is live.
  malloc_trim(0);

  const uint64_t rss_before = current_rss();
  const auto start = std::chrono::steady_clock::now();
  const auto moments = vae->encode_moments(image);  // [1, 2C, 1, H/8, W/8]
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const uint64_t transient = peak_rss() - rss_before;
  const bool finite = torch::isfinite(moments.to(torch::kFloat32)).all().item<bool>();
  std::printf(
      "{\"benchmark\": \"i2v_encoder_cpu\", \"height\": %lld, \"width\": %lld, \"dtype\": \"%s\", \"tiling\": %s, "
      "\"threads\": %d, \"encoder_weight_mib\": %.1f, \"rss_after_weights_mib\": %.1f, \"encode_transient_mib\": %.1f, "
      "\"encode_seconds\": %.2f, \"latent_shape\": [%lld, %lld, %lld, %lld, %lld], \"finite\": %s}\n",
      static_cast<long long>(height), static_cast<long long>(width), dtype_name.c_str(), tiling ? "true" : "false",
      threads, weight_bytes / 1048576.0, (rss_before - rss_start) / 1048576.0, transient / 1048576.0, seconds,
      static_cast<long long>(moments.size(0)), static_cast<long long>(moments.size(1)),
      static_cast<long long>(moments.size(2)), static_cast<long long>(moments.size(3)),
      static_cast<long long>(moments.size(4)), finite ? "true" : "false");
  return 0;
}
