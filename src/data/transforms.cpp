#include "cvx/data/transforms.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "cvx/core/error.h"
#include "cvx/core/parallel.h"

namespace cvx {

ResizeMode parse_resize_mode(const std::string& text) {
  if (text == "resize") return ResizeMode::resize;
  if (text == "center_crop") return ResizeMode::center_crop;
  if (text == "random_crop") return ResizeMode::random_crop;
  CVX_THROW_AS(ConfigError, "resize_mode '", text, "' is not one of resize, center_crop, random_crop");
}

std::pair<int64_t, int64_t> scaled_size(ResizeMode mode, int64_t height, int64_t width, int64_t out_height,
                                        int64_t out_width) {
  CVX_CHECK_AS(ConfigError, height > 0 && width > 0 && out_height > 0 && out_width > 0, "cannot resize ", height, "x",
               width, " frames to ", out_height, "x", out_width);
  if (mode == ResizeMode::resize) return {out_height, out_width};
  const double scale = std::max(static_cast<double>(out_height) / static_cast<double>(height),
                                static_cast<double>(out_width) / static_cast<double>(width));
  // Rounding may land one pixel short of the target on the covering axis; never below it. The
  // covering axis comes out exact, so a frame already at this size maps to itself.
  return {std::max<int64_t>(out_height, std::llround(static_cast<double>(height) * scale)),
          std::max<int64_t>(out_width, std::llround(static_cast<double>(width) * scale))};
}

CropWindow crop_window(ResizeMode mode, int64_t height, int64_t width, int64_t out_height, int64_t out_width,
                       std::mt19937_64* rng) {
  CropWindow w;
  std::tie(w.scaled_height, w.scaled_width) = scaled_size(mode, height, width, out_height, out_width);
  if (mode == ResizeMode::resize) return w;
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

namespace {

// Writes `frames` [F, H, W, 3] uint8, brought to the window, into `out` [F, 3, H', W'] float32 (any
// strides with unit stride along W': a plain tensor, or the frame-major view of the VAE's
// [3, F, H', W'] input, so that layout costs no extra pass).
void prepare_into(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                  std::mt19937_64* rng, torch::Tensor out) {
  CVX_CHECK_AS(ConfigError, frames.dim() == 4 && frames.size(3) == 3 && frames.scalar_type() == torch::kUInt8,
               "resize_frames: expected frames [F, H, W, 3] uint8, got ", frames.sizes(), " ", frames.scalar_type());
  const int64_t count = frames.size(0), height = frames.size(1), width = frames.size(2);
  const CropWindow w = crop_window(mode, height, width, out_height, out_width, rng);
  if (w.scaled_height == height && w.scaled_width == width) {
    // Already at the scaled size (clips are scaled while decoding): a cut, a transpose to planes
    // and x / 127.5 - 1 in one pass, through a table (the same floats as the arithmetic).
    float table[256];
    for (int v = 0; v < 256; ++v) table[v] = static_cast<float>(v) / 127.5f - 1.0f;
    const torch::Tensor source = frames.contiguous();
    const uint8_t* base = source.data_ptr<uint8_t>();
    float* target = out.data_ptr<float>();
    const int64_t frame_stride = out.stride(0), channel_stride = out.stride(1), row_stride = out.stride(2);
    parallel_chunks(count * out_height, 64, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t f = k / out_height, y = k % out_height;
        const uint8_t* in = base + ((f * height + w.top + y) * width + w.left) * 3;
        float* r = target + f * frame_stride + y * row_stride;
        float* g = r + channel_stride;
        float* b = g + channel_stride;
        for (int64_t x = 0; x < out_width; ++x) {
          r[x] = table[in[3 * x]];
          g[x] = table[in[3 * x + 1]];
          b[x] = table[in[3 * x + 2]];
        }
      }
    });
    return;
  }
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
    auto x = F::interpolate(frames.slice(0, begin, end).permute({0, 3, 1, 2}).to(torch::kFloat32), options);
    auto block = out.slice(0, begin, end);  // [f, 3, H', W']
    block.copy_(x.slice(2, w.top, w.top + out_height).slice(3, w.left, w.left + out_width));
    block.div_(127.5).sub_(1.0);
  }
}

}  // namespace

torch::Tensor resize_frames(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                            std::mt19937_64* rng) {
  auto out = torch::empty({frames.dim() > 0 ? frames.size(0) : 0, 3, out_height, out_width}, torch::kFloat32);
  prepare_into(frames, out_height, out_width, mode, rng, out);
  return out;  // [F, 3, H', W']
}

torch::Tensor to_vae_input(const torch::Tensor& frames, int64_t out_height, int64_t out_width, ResizeMode mode,
                           std::mt19937_64* rng, torch::Tensor* buffer) {
  const std::vector<int64_t> shape{1, 3, frames.dim() > 0 ? frames.size(0) : 0, out_height, out_width};
  torch::Tensor out;
  if (buffer != nullptr && buffer->defined() && buffer->sizes().vec() == shape &&
      buffer->scalar_type() == torch::kFloat32 && buffer->is_contiguous() && buffer->device().is_cpu()) {
    out = *buffer;
  } else {
    out = torch::empty(shape, torch::kFloat32);
    if (buffer != nullptr) *buffer = out;
  }
  prepare_into(frames, out_height, out_width, mode, rng, out[0].permute({1, 0, 2, 3}));
  return out;  // [1, 3, F, H', W']
}

}  // namespace cvx
