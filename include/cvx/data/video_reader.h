// Video clips in through FFmpeg: any container and codec the linked FFmpeg decodes (mp4, mkv, webm,
// mov, avi; H.264, HEVC, VP9, AV1, MPEG-4, ...). Frames come out as uint8 RGB in display
// orientation (rotation metadata applied) with their presentation times, so variable frame rate
// clips can be resampled by time.
//
// A clip is decoded once, in full: the frame count of many containers is only an estimate, and
// sampling needs the true count and times. Decoded frames stay in the decoder's own format (YUV
// 4:2:0 for almost every clip: half the bytes of RGB) and only the frames asked for are converted,
// so an 81-frame 768x1360 clip costs ~130 MB while open, and the RGB copies only what is sampled.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace cvx {

struct VideoReaderOptions {
  int threads = 0;         // decoder and RGB-conversion threads; 0: FFmpeg's choice / torch's thread count
  int64_t max_frames = 0;  // decode only the first this many frames (e.g. 1 for a first-frame image); 0: all
};

struct VideoInfo {
  int64_t frame_count = 0;  // frames decoded (at most max_frames)
  double fps = 0;           // average: the container's average rate, else frames over the time span
  double duration = 0;      // seconds, from the first frame to the end of the last one
  int64_t width = 0;        // display size: after rotation
  int64_t height = 0;
  int rotation = 0;   // clockwise degrees applied to the coded frames (0, 90, 180, 270)
  std::string codec;  // FFmpeg's codec name, e.g. "h264", "hevc", "vp9"
};

class VideoReader {
 public:
  // Decodes every frame of `file`. A missing file is a ConfigError; an unreadable, corrupt or
  // empty one (no decodable frame) a FormatError naming the file and the reason.
  explicit VideoReader(const std::filesystem::path& file, const VideoReaderOptions& options = {});
  ~VideoReader();
  VideoReader(VideoReader&&) noexcept;
  VideoReader& operator=(VideoReader&&) noexcept;

  const VideoInfo& info() const { return info_; }
  int64_t frame_count() const { return info_.frame_count; }
  // Presentation time of every frame in seconds, from the first frame (so timestamps()[0] == 0);
  // strictly increasing.
  const std::vector<double>& timestamps() const { return timestamps_; }

  // -> [len(indices), H, W, 3] uint8 RGB in display orientation. Indices may repeat and come in
  // any order; each distinct frame is converted once. Throws ConfigError for an index out of range.
  torch::Tensor frames(const std::vector<int64_t>& indices) const;
  // The same, scaled to out_height x out_width (display orientation) in the RGB conversion itself
  // (swscale, bicubic): the fast way to bring a clip to the training size.
  torch::Tensor frames(const std::vector<int64_t>& indices, int64_t out_height, int64_t out_width) const;
  // -> [F, H, W, 3], every frame.
  torch::Tensor all_frames() const;

 private:
  struct Decoded;
  std::filesystem::path file_;
  int threads_ = 0;
  VideoInfo info_;
  std::vector<double> timestamps_;
  std::unique_ptr<Decoded> decoded_;
};

}  // namespace cvx
