// Clip frames -> the VAE's input: resized to the training size and scaled to [-1, 1].
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>

namespace cvx {

enum class ResizeMode {
  // The official scheme: straight to HxW whatever the aspect ratio (bilinear, see resize_frames).
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

// [F, H, W, 3] uint8 RGB -> [F, 3, out_height, out_width] float32 in [-1, 1] (x / 127.5 - 1, the
// official x / 255 * 2 - 1). Resizing is bilinear with half-pixel centres and no antialiasing:
// torch's interpolate(mode="bilinear", align_corners=False, antialias=False), which is what
// torchvision's resize of the official scheme computes on tensors when antialias is off (on
// downscales it aliases more than PIL; kept for parity with the official latents). random_crop
// needs `rng`.
torch::Tensor resize_frames(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                            std::mt19937_64* rng = nullptr);

// [F, H, W, 3] uint8 RGB -> the VAE input [1, 3, F, out_height, out_width] float32 in [-1, 1].
torch::Tensor to_vae_input(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                           std::mt19937_64* rng = nullptr);

}  // namespace cvx
