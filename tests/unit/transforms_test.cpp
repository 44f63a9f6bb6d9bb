// Resize modes: shapes, value range, crop windows, reproducible random crops, bilinear without antialiasing.
#include <gtest/gtest.h>

#include <set>

#include "cvx/core/error.h"
#include "cvx/data/transforms.h"

using cvx::ResizeMode;

namespace {
torch::Tensor random_frames(int64_t count, int64_t height, int64_t width) {
  torch::manual_seed(0);
  return torch::randint(0, 256, {count, height, width, 3}, torch::kUInt8);
}
}  // namespace

TEST(Transforms, ResizeGivesTheVaeInputInMinusOneToOne) {
  const auto frames = random_frames(3, 40, 70);
  for (auto mode : {ResizeMode::resize, ResizeMode::center_crop, ResizeMode::random_crop}) {
    std::mt19937_64 rng(1);
    const auto out = cvx::resize_frames(frames, 32, 48, mode, &rng);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 3, 32, 48}));
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);
    EXPECT_GE(out.min().item<float>(), -1.0f);
    EXPECT_LE(out.max().item<float>(), 1.0f);
  }
  std::mt19937_64 rng(1);
  const auto vae = cvx::to_vae_input(frames, 32, 48, ResizeMode::random_crop, &rng);
  EXPECT_EQ(vae.sizes(), (std::vector<int64_t>{1, 3, 3, 32, 48}));  // [1, 3, F, H, W]
  std::mt19937_64 same(1);
  EXPECT_TRUE(
      torch::equal(vae[0].permute({1, 0, 2, 3}), cvx::resize_frames(frames, 32, 48, ResizeMode::random_crop, &same)));
  // Black and white land on the ends of the range exactly.
  auto bw = torch::zeros({1, 4, 4, 3}, torch::kUInt8);
  bw.select(2, 3).fill_(255);
  const auto x = cvx::resize_frames(bw, 4, 4, ResizeMode::resize);
  EXPECT_EQ(x.min().item<float>(), -1.0f);
  EXPECT_EQ(x.max().item<float>(), 1.0f);
}

// Half-pixel bilinear without antialiasing: an exact 2x downscale averages 2x2 blocks.
TEST(Transforms, ResizeIsBilinearWithoutAntialias) {
  const auto frames = random_frames(2, 8, 12);
  const auto out = cvx::resize_frames(frames, 4, 6, ResizeMode::resize);
  const auto expected = torch::avg_pool2d(frames.permute({0, 3, 1, 2}).to(torch::kFloat32), 2) / 127.5 - 1;
  EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5));
}

TEST(Transforms, CropWindows) {
  // 40x80 onto 32x32: scaled to cover (32x64), centre window 16 pixels in.
  const auto centre = cvx::crop_window(ResizeMode::center_crop, 40, 80, 32, 32);
  EXPECT_EQ(centre.scaled_height, 32);
  EXPECT_EQ(centre.scaled_width, 64);
  EXPECT_EQ(centre.top, 0);
  EXPECT_EQ(centre.left, 16);
  const auto whole = cvx::crop_window(ResizeMode::resize, 40, 80, 32, 32);
  EXPECT_EQ(whole.scaled_width, 32);
  EXPECT_EQ(whole.left, 0);
  // Odd source sizes still cover the target.
  const auto odd = cvx::crop_window(ResizeMode::center_crop, 61, 97, 48, 80);
  EXPECT_GE(odd.scaled_height, 48);
  EXPECT_GE(odd.scaled_width, 80);
  // Random windows: reproducible from the seed, inside the frame, not all the same.
  std::set<int64_t> lefts;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    const auto wa = cvx::crop_window(ResizeMode::random_crop, 40, 80, 32, 32, &a);
    const auto wb = cvx::crop_window(ResizeMode::random_crop, 40, 80, 32, 32, &b);
    EXPECT_EQ(wa.left, wb.left);
    EXPECT_GE(wa.left, 0);
    EXPECT_LE(wa.left, 32);
    EXPECT_EQ(wa.top, 0);
    lefts.insert(wa.left);
  }
  EXPECT_GT(lefts.size(), 5u);
  EXPECT_THROW(cvx::crop_window(ResizeMode::random_crop, 40, 80, 32, 32), cvx::ConfigError);  // no generator
  EXPECT_THROW(cvx::resize_frames(torch::zeros({1, 4, 4, 3}), 4, 4, ResizeMode::resize), cvx::ConfigError);  // float
  EXPECT_EQ(cvx::parse_resize_mode("center_crop"), ResizeMode::center_crop);
  EXPECT_THROW(cvx::parse_resize_mode("crop"), cvx::ConfigError);
}

// The centre crop of a frame already at the covering size is a plain cut.
TEST(Transforms, CenterCropCutsTheMiddle) {
  const auto frames = random_frames(1, 32, 64);
  const auto out = cvx::resize_frames(frames, 32, 32, ResizeMode::center_crop);
  const auto expected = frames.permute({0, 3, 1, 2}).slice(3, 16, 48).to(torch::kFloat32) / 127.5 - 1;
  EXPECT_TRUE(torch::allclose(out, expected, 1e-6, 1e-6));
}
