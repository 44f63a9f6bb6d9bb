// Writing videos (H.264 in mp4 via FFmpeg) and the conversion of model output to 8-bit frames.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>

namespace cvx {

struct VideoWriterOptions {
  int fps = 16;
  int crf = 18;                   // x264 quality: 0 lossless, 18 visually lossless, 23 default
  std::string preset = "medium";  // x264 speed/size trade-off
  std::string codec = "libx264";
};

// frames [F, H, W, 3] uint8 RGB -> `file` (mp4, yuv420p, `fps` frames per second). The file is
// written under a temporary name and renamed into place. yuv420p needs even sizes: an odd height or
// width is padded by repeating the last row/column (the pad is one pixel).
void write_video(const std::filesystem::path& file, const torch::Tensor& frames,
                 const VideoWriterOptions& options = {});

// Pipeline output [F, 3, H, W] (or [B, F, 3, H, W] for one sample) in [0, 1] -> [F, H, W, 3] uint8,
// rounded to the nearest level and clamped.
torch::Tensor to_uint8_frames(const torch::Tensor& video);

}  // namespace cvx
