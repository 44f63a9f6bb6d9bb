// Clip frames -> the VAE's input: resized to the training size and scaled to [-1, 1].
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>

namespace cvx {

enum class ResizeMode {
  // The official scheme: straight to HxW whatever the aspect ratio (see resize_frames).
  resize,
  // Aspect ratio kept: scaled so the frame covers HxW, then the centre HxW cut out.
  center_crop,
  // As center_crop, the cut at a random offset (one offset for the whole clip).
  random_crop,
};

// "resize", "center_crop" or "random_crop" (the [data] resize_mode choices); ConfigError otherwise.
ResizeMode parse_resize_mode(const std::string& text);

// Where the HxW window lies in a frame already scaled to cover it.
struct CropWindow {
  int64_t scaled_height = 0, scaled_width = 0;  // the frame after the aspect-preserving resize
  int64_t top = 0, left = 0;
};

// The covering size of a `height` x `width` frame for an `out_height` x `out_width` target and
// the window to cut: centred for center_crop, drawn from `rng` for random_crop (reproducible:
// rng() % (slack + 1) per axis, the same on every platform), the whole frame for resize.
CropWindow crop_window(ResizeMode mode, int64_t height, int64_t width, int64_t out_height, int64_t out_width,
                       std::mt19937_64* rng = nullptr);

// The size a `height` x `width` frame is scaled to before the window is cut: out_height x
// out_width for resize, the covering size for the crop modes. Clips are decoded straight to it
// (VideoReader::frames(indices, h, w)); resize_frames then only cuts and normalises.
std::pair<int64_t, int64_t> scaled_size(ResizeMode mode, int64_t height, int64_t width, int64_t out_height,
                                        int64_t out_width);

// [F, H, W, 3] uint8 RGB -> [F, 3, out_height, out_width] float32 in [-1, 1] (x / 127.5 - 1, the
// official x / 255 * 2 - 1). Frames not yet at scaled_size() are resized bilinearly with
// half-pixel centres and no antialiasing (torch's interpolate(mode="bilinear", align_corners=False)):
// the official I2V image path. Video clips come here already at that size, scaled by swscale's
// bicubic filter while decoding, as the official decord reader does. random_crop needs `rng`.
torch::Tensor resize_frames(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                            std::mt19937_64* rng = nullptr);

// [F, H, W, 3] uint8 RGB -> the VAE input [1, 3, F, out_height, out_width] float32 in [-1, 1].
// With `buffer`, the result is written into *buffer when it has that shape (and *buffer becomes a
// new tensor when not): a job preparing clip after clip then page-faults its ~200 MB (49 frames of
// 480x720) once, not per clip, and a pinned buffer makes the copy to a GPU asynchronous-capable.
// The result aliases *buffer.
torch::Tensor to_vae_input(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                           std::mt19937_64* rng = nullptr, torch::Tensor* buffer = nullptr);

}  // namespace cvx
