#include "cvx/data/frame_sampler.h"

#include <algorithm>
#include <cmath>

#include "cvx/core/error.h"

namespace cvx {

FrameSampling parse_frame_sampling(const std::string& text) {
  if (text == "stride") return FrameSampling::stride;
  if (text == "spread") return FrameSampling::spread;
  if (text == "fps") return FrameSampling::fps;
  CVX_THROW_AS(ConfigError, "frame_sampling '", text, "' is not one of stride, spread, fps");
}

void check_frame_count(int64_t frames, std::string_view what) {
  CVX_CHECK_AS(ConfigError, frames > 0, what, ": ", frames, " frames; expected 8N+1 frames (1, 9, ..., 49, 81)");
  if ((frames - 1) % 8 != 0) {
    const int64_t lower = (frames - 1) / 8 * 8 + 1;
    CVX_THROW_AS(ConfigError, what, ": ", frames, " frames is not 8N+1 (the VAE compresses 4 frames ",
                 "after the first, and CogVideoX trains on 8N+1); nearest valid: ", lower, " or ", lower + 8);
  }
}

namespace {

std::vector<int64_t> stride_indices(int64_t frame_count, int64_t frames) {
  std::vector<int64_t> indices;
  if (frame_count < frames) {
    for (int64_t i = 0; i < frame_count; ++i) indices.push_back(i);
    indices.resize(static_cast<size_t>(frames), frame_count - 1);
    return indices;
  }
  const int64_t stride = frame_count / frames;
  for (int64_t i = 0; i < frames; ++i) indices.push_back(i * stride);
  return indices;
}

std::vector<int64_t> spread_indices(int64_t frame_count, int64_t frames) {
  std::vector<int64_t> indices;
  const double step = frames > 1 ? static_cast<double>(frame_count - 1) / static_cast<double>(frames - 1) : 0.0;
  // std::nearbyint rounds halves to even, as numpy's round does.
  for (int64_t i = 0; i < frames; ++i) indices.push_back(static_cast<int64_t>(std::nearbyint(i * step)));
  return indices;
}

std::vector<int64_t> fps_indices(const std::vector<double>& timestamps, int64_t frames, double target_fps) {
  std::vector<int64_t> indices;
  const double start = timestamps.front();
  for (int64_t k = 0; k < frames; ++k) {
    const double t = start + static_cast<double>(k) / target_fps;
    // First frame at or after t, then whichever of it and its predecessor is nearer (ties: earlier).
    const auto after = std::lower_bound(timestamps.begin(), timestamps.end(), t);
    int64_t index = after - timestamps.begin();
    if (after == timestamps.end() || (index > 0 && t - timestamps[index - 1] <= *after - t)) --index;
    indices.push_back(index);
  }
  return indices;
}

}  // namespace

std::vector<int64_t> sample_frame_indices(FrameSampling mode, int64_t frame_count, int64_t frames,
                                          const std::vector<double>& timestamps, double target_fps) {
  check_frame_count(frames, "frames per training clip");
  CVX_CHECK_AS(ConfigError, frame_count > 0, "cannot sample ", frames, " frames from a clip without frames");
  switch (mode) {
    case FrameSampling::stride: return stride_indices(frame_count, frames);
    case FrameSampling::spread: return spread_indices(frame_count, frames);
    case FrameSampling::fps:
      CVX_CHECK_AS(ConfigError, std::isfinite(target_fps) && target_fps > 0,
                   "frame_sampling fps needs a target frame rate > 0, got ", target_fps);
      CVX_CHECK_AS(ConfigError, static_cast<int64_t>(timestamps.size()) == frame_count,
                   "frame_sampling fps needs one timestamp per frame: ", timestamps.size(), " for ", frame_count,
                   " frames");
      return fps_indices(timestamps, frames, target_fps);
  }
  CVX_THROW_AS(ConfigError, "unknown frame sampling mode");
}

}  // namespace cvx
