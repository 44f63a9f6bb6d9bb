// Decode + sample + resize throughput of cvx's video input path against the ffmpeg CLI decoding the
// same file to rawvideo at the same size in one run. Prints one JSON line with the ratio.
// usage: bench_decode_cpu CLIP.mp4 FRAMES HEIGHT WIDTH
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cvx/core/host_memory.h"
#include "cvx/data/frame_sampler.h"
#include "cvx/data/transforms.h"
#include "cvx/data/video_reader.h"

namespace {
template <class F>
double best_of(int runs, F f) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: bench_decode_cpu CLIP FRAMES HEIGHT WIDTH\n");
    return 2;
  }
  cvx::tune_host_allocator();
  torch::set_num_threads(2);
  const std::string clip = argv[1];
  const int64_t frames = std::atoll(argv[2]), height = std::atoll(argv[3]), width = std::atoll(argv[4]);
  int64_t decoded = 0;
  const double ours = best_of(3, [&] {
    cvx::VideoReaderOptions options;
    options.threads = 2;
    cvx::VideoReader reader(clip, options);
    const auto idx = cvx::sample_frame_indices(cvx::FrameSampling::stride, reader.frame_count(), frames);
    const auto video = cvx::to_vae_input(reader.frames(idx), height, width, cvx::ResizeMode::resize);
    decoded = reader.frame_count();
  });
  const std::string command = "ffmpeg -v error -threads 2 -i '" + clip + "' -frames:v " + std::to_string(frames) +
                              " -vf scale=" + std::to_string(width) + ":" + std::to_string(height) +
                              " -f rawvideo -pix_fmt rgb24 - > /dev/null";
  const double cli = best_of(3, [&] {
    if (std::system(command.c_str()) != 0) std::exit(1);
  });
  std::printf("{\"benchmark\": \"decode_cpu\", \"clip\": \"%s\", \"frames\": %lld, \"decoded\": %lld, \"size\": \"%lldx%lld\", "
              "\"cvx_frames_per_s\": %.1f, \"ffmpeg_cli_frames_per_s\": %.1f, \"ratio\": %.2f}\n",
              clip.c_str(), static_cast<long long>(frames), static_cast<long long>(decoded),
              static_cast<long long>(height), static_cast<long long>(width), frames / ours, frames / cli, cli / ours);
  return 0;
}
