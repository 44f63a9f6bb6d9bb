#include "cvx/model/embeddings.h"

#include "cvx/core/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace {

using cvx::CropRegion;

// diffusers' own formulation: x * cos + rotate(x) * sin with a materialised rotated copy.
torch::Tensor reference_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  auto shape = x.sizes().vec();
  shape.back() /= 2;
  shape.push_back(2);
  const auto parts = x.reshape(shape).unbind(-1);
  const auto rotated = torch::stack({-parts[1], parts[0]}, -1).flatten(-2);
  return (x.to(torch::kFloat32) * cos + rotated.to(torch::kFloat32) * sin).to(x.scalar_type());
}

// A table with independent cos and sin values per channel (not just the repeated RoPE pattern).
std::pair<torch::Tensor, torch::Tensor> random_tables(int64_t n, int64_t d) {
  const auto angle = torch::rand({n, d}) * 6.0;
  return {angle.cos(), angle.sin()};
}

TEST(Embeddings, RoundHalfToEven) {
  EXPECT_EQ(cvx::round_half_to_even(0.5), 0);
  EXPECT_EQ(cvx::round_half_to_even(1.5), 2);
  EXPECT_EQ(cvx::round_half_to_even(2.5), 2);
  EXPECT_EQ(cvx::round_half_to_even(12.5), 12);
  EXPECT_EQ(cvx::round_half_to_even(-0.5), 0);
  EXPECT_EQ(cvx::round_half_to_even(-1.5), -2);
  EXPECT_EQ(cvx::round_half_to_even(-2.5), -2);
  EXPECT_EQ(cvx::round_half_to_even(2.4999999), 2);
  EXPECT_EQ(cvx::round_half_to_even(2.5000001), 3);
  EXPECT_EQ(cvx::round_half_to_even(-2.6), -3);
  EXPECT_EQ(cvx::round_half_to_even(7.0), 7);
  EXPECT_THROW(cvx::round_half_to_even(std::nan("")), cvx::Error);
}

TEST(Embeddings, CropRegionUsesBankersRounding) {
  // CogVideoX 1.0 base grid 30x45 (480x720, patch 2, VAE factor 8); grids for three resolutions.
  EXPECT_EQ(cvx::resize_crop_region_for_grid(30, 45, 45, 30), (CropRegion{0, 0, 30, 45}));   // 480x720
  EXPECT_EQ(cvx::resize_crop_region_for_grid(45, 30, 45, 30), (CropRegion{0, 12, 30, 32}));  // 720x480: 12.5 -> 12
  EXPECT_EQ(cvx::resize_crop_region_for_grid(48, 85, 45, 30), (CropRegion{2, 0, 27, 45}));   // 768x1360: 2.5 -> 2
  EXPECT_THROW(cvx::resize_crop_region_for_grid(0, 45, 45, 30), cvx::Error);
}

TEST(Embeddings, RotaryTableLayout) {
  const int64_t d = 32, t = 3, gh = 4, gw = 5;
  const auto rope = cvx::rotary_pos_embed_3d(d, std::nullopt, gh, gw, t, "slice", std::make_pair(gh, gw));
  ASSERT_EQ(rope.cos.sizes(), (torch::IntArrayRef{t * gh * gw, d}));
  EXPECT_EQ(rope.cos.scalar_type(), torch::kFloat32);
  // Pairs repeat each frequency; cos^2 + sin^2 = 1.
  EXPECT_TRUE(torch::equal(rope.cos.slice(1, 0, d, 2), rope.cos.slice(1, 1, d, 2)));
  EXPECT_TRUE(torch::equal(rope.sin.slice(1, 0, d, 2), rope.sin.slice(1, 1, d, 2)));
  EXPECT_TRUE(torch::allclose(rope.cos.square() + rope.sin.square(), torch::ones_like(rope.cos), 0, 1e-6));
  // Token (ti, r, c) -> channels [t (d/4) | h (3d/8) | w (3d/8)]: angle = position * theta^(-2j/width).
  const auto angles = torch::atan2(rope.sin, rope.cos).to(torch::kFloat64).view({t, gh, gw, d});
  const int64_t dt = d / 4, dh = d / 8 * 3;
  const auto freq = [](int64_t j, int64_t width) { return std::pow(10000.0, -2.0 * j / width); };
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t c = 0; c < gw; ++c) {
        const auto a = angles[ti][r][c];
        EXPECT_NEAR(a[2].item<double>(), ti * freq(1, dt), 1e-5);
        EXPECT_NEAR(a[dt + 2].item<double>(), r * freq(1, dh), 1e-5);
        EXPECT_NEAR(a[dt + dh + 4].item<double>(), c * freq(2, dh), 1e-5);
      }
}

TEST(Embeddings, RotarySliceIsIndependentOfMaxSize) {
  // The pipeline passes the model's base grid, the finetune recipe the actual grid.
  const auto small = cvx::rotary_pos_embed_3d(16, std::nullopt, 3, 4, 2, "slice", std::pair<int64_t, int64_t>{3, 4});
  const auto big = cvx::rotary_pos_embed_3d(16, std::nullopt, 3, 4, 2, "slice", std::pair<int64_t, int64_t>{150, 150});
  EXPECT_TRUE(torch::allclose(small.cos, big.cos, 0, 1e-7));
  EXPECT_TRUE(torch::allclose(small.sin, big.sin, 0, 1e-7));
  // A full-grid crop ((0, 0), (gh, gw)) gives linspace positions 0..n-1, i.e. the slice grid.
  const auto lin = cvx::rotary_pos_embed_3d(16, CropRegion{0, 0, 3, 4}, 3, 4, 2, "linspace");
  EXPECT_TRUE(torch::equal(lin.cos, small.cos));
  EXPECT_TRUE(torch::equal(lin.sin, small.sin));
}

TEST(Embeddings, RotaryLinspaceEndPoint) {
  // Crop ((1, 2), (4, 6)) on a 3x4 grid: h = linspace(1, 4*2/3, 3), w = linspace(2, 6*3/4, 4), i.e. the end is
  // stop*(n-1)/n, not start + (stop-start)*(n-1)/n. The first h and w frequencies are 1: angle = position.
  const auto rope = cvx::rotary_pos_embed_3d(16, CropRegion{1, 2, 4, 6}, 3, 4, 1, "linspace");
  const auto cos = rope.cos.view({3, 4, 16}), sin = rope.sin.view({3, 4, 16});
  const int64_t h0 = 16 / 4, w0 = 16 / 4 + 16 / 8 * 3;
  const double h_end = 8.0 / 3.0, w_end = 4.5;
  for (int r = 0; r < 3; ++r) {
    const double pos = 1.0 + (h_end - 1.0) * r / 2.0;
    EXPECT_NEAR(cos[r][0][h0].item<double>(), std::cos(pos), 1e-6) << r;
    EXPECT_NEAR(sin[r][0][h0].item<double>(), std::sin(pos), 1e-6) << r;
  }
  for (int c = 0; c < 4; ++c) {
    const double pos = 2.0 + (w_end - 2.0) * c / 3.0;
    EXPECT_NEAR(cos[0][c][w0].item<double>(), std::cos(pos), 1e-6) << c;
    EXPECT_NEAR(sin[0][c][w0].item<double>(), std::sin(pos), 1e-6) << c;
  }
}

TEST(Embeddings, RotaryArgumentChecks) {
  EXPECT_THROW(cvx::rotary_pos_embed_3d(24, CropRegion{0, 0, 2, 2}, 2, 2, 1, "linspace"), cvx::Error);
  EXPECT_THROW(cvx::rotary_pos_embed_3d(16, std::nullopt, 2, 2, 1, "linspace"), cvx::Error);
  EXPECT_THROW(cvx::rotary_pos_embed_3d(16, std::nullopt, 2, 2, 1, "slice"), cvx::Error);
  EXPECT_THROW(cvx::rotary_pos_embed_3d(16, std::nullopt, 4, 2, 1, "slice", std::pair<int64_t, int64_t>{3, 3}),
               cvx::Error);
  EXPECT_THROW(cvx::rotary_pos_embed_3d(16, CropRegion{0, 0, 2, 2}, 2, 2, 1, "grid"), cvx::Error);
}

TEST(Embeddings, ApplyRotaryMatchesPairwiseFormula) {
  torch::manual_seed(0);
  const int64_t b = 2, h = 3, n = 5, d = 8;
  const auto x = torch::randn({b, h, n, d});
  const auto [cos, sin] = random_tables(n, d);
  const auto out = cvx::apply_rotary_emb(x, cos, sin);
  ASSERT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(out.is_contiguous());
  // Bit-identical to the reference's formulation.
  EXPECT_TRUE(torch::equal(out, reference_rotary(x, cos, sin)));
  // The explicit pairwise rotation, element by element in double.
  const auto xa = x.accessor<float, 4>();
  const auto ca = cos.accessor<float, 2>();
  const auto sa = sin.accessor<float, 2>();
  const auto oa = out.accessor<float, 4>();
  for (int64_t i = 0; i < b; ++i)
    for (int64_t k = 0; k < h; ++k)
      for (int64_t p = 0; p < n; ++p)
        for (int64_t j = 0; j < d / 2; ++j) {
          const double x0 = xa[i][k][p][2 * j], x1 = xa[i][k][p][2 * j + 1];
          EXPECT_NEAR(oa[i][k][p][2 * j], x0 * ca[p][2 * j] - x1 * sa[p][2 * j], 1e-6);
          EXPECT_NEAR(oa[i][k][p][2 * j + 1], x1 * ca[p][2 * j + 1] + x0 * sa[p][2 * j + 1], 1e-6);
        }
}

TEST(Embeddings, ApplyRotaryNonContiguousInput) {
  torch::manual_seed(1);
  // [B, N, H, D] transposed to [B, H, N, D], as q/k come out of the projection.
  const auto x = torch::randn({2, 7, 3, 16}).transpose(1, 2);
  const auto rope = cvx::rotary_pos_embed_3d(16, std::nullopt, 7, 1, 1, "slice", std::pair<int64_t, int64_t>{7, 1});
  EXPECT_TRUE(torch::equal(cvx::apply_rotary_emb(x, rope.cos, rope.sin), reference_rotary(x, rope.cos, rope.sin)));
}

TEST(Embeddings, ApplyRotaryGradient) {
  torch::manual_seed(2);
  const int64_t n = 4, d = 16;
  const auto x = torch::randn({2, 2, n, d}).requires_grad_(true);
  auto [cos, sin] = random_tables(n, d);
  cos.requires_grad_(true);
  sin.requires_grad_(true);
  const auto g = torch::randn({2, 2, n, d});
  const auto out = cvx::apply_rotary_emb(x, cos, sin);
  ASSERT_TRUE(out.requires_grad());
  // The differentiable path computes exactly what the no-grad path does.
  EXPECT_TRUE(torch::equal(out.detach(), cvx::apply_rotary_emb(x.detach(), cos.detach(), sin.detach())));
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(cvx::apply_rotary_emb(x, cos, sin).requires_grad());
  }
  (out * g).sum().backward();

  // Analytic gradients of L = sum(g * out).
  const auto xs = x.detach().view({2, 2, n, d / 2, 2});
  const auto gs = g.view({2, 2, n, d / 2, 2});
  const auto cs = cos.detach().view({n, d / 2, 2});
  const auto ss = sin.detach().view({n, d / 2, 2});
  const auto g0 = gs.select(-1, 0), g1 = gs.select(-1, 1);
  const auto x0 = xs.select(-1, 0), x1 = xs.select(-1, 1);
  const auto c0 = cs.select(-1, 0), c1 = cs.select(-1, 1), s0 = ss.select(-1, 0), s1 = ss.select(-1, 1);
  const auto dx = torch::stack({g0 * c0 + g1 * s1, g1 * c1 - g0 * s0}, -1).view_as(x);
  const auto dcos = (xs * gs).sum(0).sum(0).view({n, d});
  const auto dsin = torch::stack({(-x1 * g0).sum(0).sum(0), (x0 * g1).sum(0).sum(0)}, -1).view({n, d});
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(x.grad(), dx, 1e-6, 1e-5));
  EXPECT_TRUE(torch::allclose(cos.grad(), dcos, 1e-6, 1e-5));
  EXPECT_TRUE(torch::allclose(sin.grad(), dsin, 1e-6, 1e-5));
}

TEST(Embeddings, ApplyRotaryReducedPrecisionKeepsDtype) {
  torch::manual_seed(3);
  const auto x = torch::randn({1, 2, 6, 16}).to(torch::kBFloat16);
  const auto rope = cvx::rotary_pos_embed_3d(16, std::nullopt, 2, 3, 1, "slice", std::pair<int64_t, int64_t>{2, 3});
  const auto out = cvx::apply_rotary_emb(x, rope.cos, rope.sin);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(out, reference_rotary(x, rope.cos, rope.sin)));  // float32 math, one rounding to bf16
  const auto trained = x.detach().requires_grad_(true);
  const auto out_graph = cvx::apply_rotary_emb(trained, rope.cos, rope.sin);
  EXPECT_EQ(out_graph.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(out_graph.detach(), out));
  out_graph.sum().backward();
  EXPECT_EQ(trained.grad().scalar_type(), torch::kBFloat16);
  EXPECT_THROW(cvx::apply_rotary_emb(x, rope.cos.slice(0, 0, 5), rope.sin.slice(0, 0, 5)), cvx::Error);
}

TEST(Embeddings, TimestepEmbeddingFormula) {
  const auto t = torch::tensor({0, 1, 10, 999}, torch::kInt64);
  for (int64_t dim : {8, 9}) {
    const auto emb = cvx::timestep_embedding(t, dim);
    ASSERT_EQ(emb.sizes(), (torch::IntArrayRef{4, dim}));
    EXPECT_EQ(emb.scalar_type(), torch::kFloat32);
    const int64_t half = dim / 2;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t k = 0; k < half; ++k) {
        const double arg = t[i].item<double>() * std::exp(-std::log(10000.0) * k / half);
        const double tol = 1e-6 * std::max(1.0, arg);               // float32 rounding of the frequency scales with t
        EXPECT_NEAR(emb[i][k].item<double>(), std::cos(arg), tol);  // flipped: cos first
        EXPECT_NEAR(emb[i][half + k].item<double>(), std::sin(arg), tol);
      }
    if (dim % 2 == 1) EXPECT_TRUE(torch::equal(emb.select(1, dim - 1), torch::zeros({4})));
  }
  const auto unflipped = cvx::timestep_embedding(t, 8, false);
  const auto flipped = cvx::timestep_embedding(t, 8, true);
  EXPECT_TRUE(torch::equal(unflipped, torch::cat({flipped.slice(1, 4), flipped.slice(1, 0, 4)}, 1)));
  // downscale_freq_shift = 1 (the diffusers default) spreads the frequencies over half - 1 steps.
  const auto shifted = cvx::timestep_embedding(torch::tensor({1000.0f}), 8, true, 1.0);
  EXPECT_NEAR(shifted[0][7].item<double>(), std::sin(0.1), 1e-5);  // 1000 * 10000^(-3/3)
  EXPECT_THROW(cvx::timestep_embedding(torch::zeros({2, 2}), 8), cvx::Error);
}

TEST(Embeddings, SincosTableLayout) {
  const int64_t d = 32, t = 2, gh = 3, gw = 4;
  const double s = 1.875;
  const auto table = cvx::sincos_pos_embed_3d(d, gh, gw, t, s, 1.0);
  ASSERT_EQ(table.sizes(), (torch::IntArrayRef{t, gh * gw, d}));
  EXPECT_EQ(table.scalar_type(), torch::kFloat64);
  // [E_{d/4}(t) | E_{3d/8}(col / s) | E_{3d/8}(row / s)], E_w(p) = [sin(p w_k) | cos(p w_k)], w_k = 10000^(-k/(w/2)).
  const auto e = [](int64_t width, double pos, int64_t i) {
    const int64_t half = width / 2;
    const double w = 1.0 / std::pow(10000.0, static_cast<double>(i % half) / half);
    return i < half ? std::sin(pos * w) : std::cos(pos * w);
  };
  const auto a = table.accessor<double, 3>();
  const int64_t dt = d / 4, ds = 3 * d / 8;
  for (int64_t ti = 0; ti < t; ++ti)
    for (int64_t r = 0; r < gh; ++r)
      for (int64_t c = 0; c < gw; ++c) {
        const double pr = static_cast<float>(r / s), pc = static_cast<float>(c / s);  // float32 positions
        for (int64_t i = 0; i < dt; ++i) EXPECT_NEAR(a[ti][r * gw + c][i], e(dt, ti, i), 1e-14);
        for (int64_t i = 0; i < ds; ++i) EXPECT_NEAR(a[ti][r * gw + c][dt + i], e(ds, pc, i), 1e-14);
        for (int64_t i = 0; i < ds; ++i) EXPECT_NEAR(a[ti][r * gw + c][dt + ds + i], e(ds, pr, i), 1e-14);
      }
  EXPECT_THROW(cvx::sincos_pos_embed_3d(20, 2, 2, 1, 1.0, 1.0), cvx::Error);
}

}  // namespace
