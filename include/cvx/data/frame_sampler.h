// Which frames of a clip make a training sample of F = 8N+1 frames. Pure index arithmetic over a
// clip's frame count (and presentation times for `fps`), so every rule is testable without video.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cvx {

enum class FrameSampling {
  // The official CogVideoX finetune rule: a clip with fewer than F frames gives all its frames and
  // then its last frame repeated up to F; otherwise every (N // F)-th frame from the first, the
  // first F of them. Takes the clip's beginning, not its whole length.
  stride,
  // Evenly over the whole clip: round(linspace(0, N - 1, F)); short clips repeat frames in place.
  spread,
  // Resampled by time to a target frame rate (8 fps for CogVideoX 1.0, 16 for 1.5): frame k is
  // the one nearest to k / fps seconds; past the clip's end the last frame repeats.
  fps,
};

// "stride", "spread" or "fps" (the [data] frame_sampling choices); ConfigError otherwise.
FrameSampling parse_frame_sampling(const std::string& text);

// Throws ConfigError unless frames = 8N+1 (N >= 0), naming `what` and the nearest valid counts.
void check_frame_count(int64_t frames, std::string_view what);

// -> `frames` indices into a clip of `frame_count` frames (each in [0, frame_count)).
// `timestamps` (seconds, increasing, one per frame) and `target_fps` are needed by `fps` only.
// ConfigError for F not 8N+1, an empty clip or a bad target fps.
std::vector<int64_t> sample_frame_indices(FrameSampling mode, int64_t frame_count, int64_t frames,
                                          const std::vector<double>& timestamps = {}, double target_fps = 0);

}  // namespace cvx
