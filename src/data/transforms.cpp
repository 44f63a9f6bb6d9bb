#include "cvx/data/transforms.h"

#include <algorithm>
#include <cmath>

#include "cvx/core/error.h"

namespace cvx {

ResizeMode parse_resize_mode(const std::string& text) {
  if (text == "resize") return ResizeMode::resize;
  if (text == "center_crop") return ResizeMode::center_crop;
  if (text == "random_crop") return ResizeMode::random_crop;
  CVX_THROW_AS(ConfigError, "resize_mode '", text, "' is not one of resize, center_crop, random_crop");
}

CropWindow crop_window(ResizeMode mode, int64_t height, int64_t width, int64_t out_height, int64_t out_width,
                       std::mt19937_64* rng) {
  CVX_CHECK_AS(ConfigError, height > 0 && width > 0 && out_height > 0 && out_width > 0, "cannot resize ", height, "x",
               width, " frames to ", out_height, "x", out_width);
  if (mode == ResizeMode::resize) return {out_height, out_width, 0, 0};
  const double scale = std::max(static_cast<double>(out_height) / static_cast<double>(height),
                                static_cast<double>(out_width) / static_cast<double>(width));
  CropWindow w;
  // Rounding may land one pixel short of the target on the covering axis; never below it.
  w.scaled_height = std::max<int64_t>(out_height, std::llround(static_cast<double>(height) * scale));
  w.scaled_width = std::max<int64_t>(out_width, std::llround(static_cast<double>(width) * scale));
  const int64_t slack_h = w.scaled_height - out_height, slack_w = w.scaled_width - out_width;
  if (mode == ResizeMode::center_crop) {
    w.top = slack_h / 2;
    w.left = slack_w / 2;
  } else {
    CVX_CHECK_AS(ConfigError, rng != nullptr, "resize_mode random_crop needs a random generator");
    w.top = static_cast<int64_t>((*rng)() % static_cast<uint64_t>(slack_h + 1));
    w.left = static_cast<int64_t>((*rng)() % static_cast<uint64_t>(slack_w + 1));
  }
  return w;
}

torch::Tensor resize_frames(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                            std::mt19937_64* rng) {
  CVX_CHECK_AS(ConfigError, frames.dim() == 4 && frames.size(3) == 3 && frames.scalar_type() == torch::kUInt8,
               "resize_frames: expected frames [F, H, W, 3] uint8, got ", frames.sizes(), " ", frames.scalar_type());
  const int64_t count = frames.size(0), height = frames.size(1), width = frames.size(2);
  const CropWindow w = crop_window(mode, height, width, out_height, out_width, rng);
  auto out = torch::empty({count, 3, out_height, out_width}, torch::kFloat32);  // [F, 3, H', W']
  namespace F = torch::nn::functional;
  const auto options = F::InterpolateFuncOptions()
                           .size(std::vector<int64_t>{w.scaled_height, w.scaled_width})
                           .mode(torch::kBilinear)
                           .align_corners(false)
                           .antialias(false);
  // A few frames at a time: the whole clip in float at source size would be ~1 GB for 81 frames of 768x1360.
  constexpr int64_t chunk = 8;
  for (int64_t begin = 0; begin < count; begin += chunk) {
    const int64_t end = std::min(count, begin + chunk);
    auto x = frames.slice(0, begin, end).permute({0, 3, 1, 2}).to(torch::kFloat32);  // [f, 3, H, W]
    if (w.scaled_height != height || w.scaled_width != width) x = F::interpolate(x, options);
    x = x.slice(2, w.top, w.top + out_height).slice(3, w.left, w.left + out_width);
    out.slice(0, begin, end).copy_(x.div_(127.5).sub_(1.0));
  }
  return out;
}

torch::Tensor to_vae_input(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                           std::mt19937_64* rng) {
  // [F, 3, H, W] -> [1, 3, F, H, W]
  return resize_frames(frames, out_height, out_width, mode, rng).permute({1, 0, 2, 3}).unsqueeze(0).contiguous();
}

}  // namespace cvx
