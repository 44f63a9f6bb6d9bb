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
  torch::Tensor buffer;                                 // reused from clip to clip, as the precompute job does
  double decode_s = 0, convert_s = 0, normalise_s = 0;  // the stages of the best run
  const double ours = best_of(3, [&] {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    cvx::VideoReaderOptions options;
    options.threads = 2;
    cvx::VideoReader reader(clip, options);
    const auto idx = cvx::sample_frame_indices(cvx::FrameSampling::stride, reader.frame_count(), frames);
    const auto t1 = clock::now();
    // As the precompute does: scaled in the RGB conversion, then cut and normalised.
    const auto rgb = reader.frames(idx, height, width);
    const auto t2 = clock::now();
    const auto video = cvx::to_vae_input(rgb, height, width, cvx::ResizeMode::resize, nullptr, &buffer);
    const auto t3 = clock::now();
    decoded = reader.frame_count();
    const double total = std::chrono::duration<double>(t3 - t0).count();
    if (decode_s + convert_s + normalise_s == 0 || total < decode_s + convert_s + normalise_s) {
      decode_s = std::chrono::duration<double>(t1 - t0).count();
      convert_s = std::chrono::duration<double>(t2 - t1).count();
      normalise_s = std::chrono::duration<double>(t3 - t2).count();
    }
  });
  const std::string command = "ffmpeg -v error -threads 2 -i '" + clip + "' -frames:v " + std::to_string(frames) +
                              " -vf scale=" + std::to_string(width) + ":" + std::to_string(height) +
                              " -f rawvideo -pix_fmt rgb24 - > /dev/null";
  const double cli = best_of(3, [&] {
    if (std::system(command.c_str()) != 0) std::exit(1);
  });
  std::printf(
      "{\"benchmark\": \"decode_cpu\", \"clip\": \"%s\", \"frames\": %lld, \"decoded\": %lld, \"size\": \"%lldx%lld\", "
      "\"cvx_frames_per_s\": %.1f, \"ffmpeg_cli_frames_per_s\": %.1f, \"ratio\": %.2f, \"cvx_decode_ms\": %.0f, "
      "\"cvx_convert_scale_ms\": %.0f, \"cvx_normalise_ms\": %.0f}\n",
      clip.c_str(), static_cast<long long>(frames), static_cast<long long>(decoded), static_cast<long long>(height),
      static_cast<long long>(width), frames / ours, frames / cli, cli / ours, 1e3 * decode_s, 1e3 * convert_s,
      1e3 * normalise_s);
  return 0;
}
