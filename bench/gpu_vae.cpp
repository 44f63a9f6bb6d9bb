// VAE encode of one clip with the released CogVideoX VAE architecture (random weights) on a CUDA
// device or the CPU: seconds per clip and the peak memory, as the precompute runs it (tiling on
// by default, as cvx_precompute; --tiling 0 for the whole clip at once). One `RESULT {json}` line.
//
// usage: bench_gpu_vae --variant 5b|1.5-t2v --frames 49 --height 480 --width 720 [--dtype bf16|fp32]
//        [--tiling 1] [--runs 3] [--device cuda|cpu] [--json FILE]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "cvx/core/device_memory.h"
#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"
#include "cvx/model/vae.h"

#ifdef CVX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <torch/cuda.h>
#endif

int main(int argc, char** argv) {
  try {
    std::map<std::string, std::string> a{{"--variant", "5b"}, {"--frames", "49"},   {"--height", "480"},
                                         {"--width", "720"},  {"--dtype", "bf16"},  {"--tiling", "1"},
                                         {"--runs", "3"},     {"--device", "cuda"}, {"--json", ""}};
    for (int i = 1; i + 1 < argc; i += 2) {
      CVX_CHECK_AS(cvx::ConfigError, a.count(argv[i]), "unknown option ", argv[i],
                   " (see the usage at the top of bench/gpu_vae.cpp)");
      a[argv[i]] = argv[i + 1];
    }
    const torch::Device device(a["--device"] == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU));
    CVX_CHECK_AS(cvx::ConfigError, !device.is_cuda() || torch::cuda::is_available(), "--device cuda: no CUDA device");
    const auto dtype = cvx::parse_dtype(a["--dtype"], "--dtype");
    const int64_t frames = std::stoll(a["--frames"]), height = std::stoll(a["--height"]),
                  width = std::stoll(a["--width"]), runs = std::stoll(a["--runs"]);
    torch::manual_seed(0);
    cvx::AutoencoderKLCogVideoX vae(cvx::vae_preset(a["--variant"]));
    vae->to(device, dtype);
    vae->eval();
    if (a["--tiling"] == "1") vae->enable_tiling();
    torch::NoGradGuard no_grad;
    const auto video = (torch::rand({1, 3, frames, height, width}) * 2 - 1).to(device, dtype);  // [B, 3, F, H, W]
    auto sync = [&] {
#ifdef CVX_WITH_CUDA
      if (device.is_cuda()) torch::cuda::synchronize(device.index());
#endif
    };
    torch::Tensor latents = vae->encode(video).mean;  // warm-up
    sync();
    if (device.is_cuda()) cvx::reset_cuda_peak_memory(device.index());
    std::vector<double> seconds;
    for (int64_t r = 0; r < runs; ++r) {
      const auto start = std::chrono::steady_clock::now();
      latents = vae->encode(video).mean;
      sync();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(seconds.begin(), seconds.end());
    double peak = 0;
    std::string device_name = "cpu", memory_kind = "peak RSS";
    if (device.is_cuda()) {
      peak = static_cast<double>(cvx::cuda_peak_allocated_bytes(device.index()));
      memory_kind = "CUDA max allocated";
#ifdef CVX_WITH_CUDA
      device_name = at::cuda::getDeviceProperties(device.index())->name;
#endif
    } else {
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      peak = static_cast<double>(usage.ru_maxrss) * 1024.0;
    }
    const nlohmann::json result{{"stack", "cvx"},
                                {"benchmark", "vae_encode"},
                                {"variant", a["--variant"]},
                                {"frames", frames},
                                {"height", height},
                                {"width", width},
                                {"dtype", a["--dtype"]},
                                {"tiling", a["--tiling"] == "1"},
                                {"device", device_name},
                                {"latents", latents.sizes().vec()},
                                {"seconds_per_clip_median", seconds[seconds.size() / 2]},
                                {"seconds_all", seconds},
                                {"memory_kind", memory_kind},
                                {"peak_memory_gib", peak / 1073741824.0}};
    std::printf("RESULT %s\n", result.dump().c_str());
    if (!a["--json"].empty()) std::ofstream(a["--json"]) << result.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_vae: %s\n", e.what());
    std::printf("RESULT %s\n",
                nlohmann::json{{"stack", "cvx"}, {"benchmark", "vae_encode"}, {"error", e.what()}}.dump().c_str());
    return 1;
  }
}
