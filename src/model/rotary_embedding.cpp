// 3D rotary position tables (diffusers get_3d_rotary_pos_embed, use_real=True), the pipelines' crop
// region, and their application to queries/keys (apply_rotary_emb, use_real_unbind_dim=-1).
#include <cmath>

#include "cvx/core/error.h"
#include "cvx/model/embeddings.h"

namespace cvx {
namespace {

struct AxisTables {
  torch::Tensor cos, sin;  // [n, dim] float32
};

// diffusers get_1d_rotary_pos_embed(dim, pos, theta, use_real=True, repeat_interleave_real=True), float32.
// pos [n] float32 -> [n, dim] twice
AxisTables rotary_1d(int64_t dim, const torch::Tensor& pos, double theta) {
  // theta^(-2j/dim) as the reference rounds it: float32 arange / dim, then pow, then reciprocal.
  auto freqs = torch::arange(0, dim, 2, pos.options()) / dim;
  freqs = torch::pow(theta, freqs).reciprocal();  // [dim/2]
  const auto angles = torch::outer(pos, freqs);   // [n, dim/2]
  // repeat_interleave(2, dim=1): c0, c0, c1, c1, ...
  const auto twice = [dim](const torch::Tensor& v) {
    return v.unsqueeze(2).expand({-1, -1, 2}).reshape({v.size(0), dim});
  };
  return {twice(angles.cos()), twice(angles.sin())};
}

// Broadcasts the per-axis tables over the (t, row, col) grid and concatenates their channels.
// [T, dt], [H, dh], [W, dw] -> [T*H*W, dt+dh+dw]
torch::Tensor combine_axes(const torch::Tensor& t, const torch::Tensor& h, const torch::Tensor& w) {
  const int64_t nt = t.size(0), nh = h.size(0), nw = w.size(0);
  return torch::cat({t.view({nt, 1, 1, -1}).expand({nt, nh, nw, t.size(1)}),
                     h.view({1, nh, 1, -1}).expand({nt, nh, nw, h.size(1)}),
                     w.view({1, 1, nw, -1}).expand({nt, nh, nw, w.size(1)})},
                    3)
      .view({nt * nh * nw, -1});
}

}  // namespace

int64_t round_half_to_even(double value) {
  CVX_CHECK(std::isfinite(value), "round_half_to_even: value is not finite: ", value);
  const double lower = std::floor(value);
  const double fraction = value - lower;  // exact for every double
  double rounded = lower;
  if (fraction > 0.5 || (fraction == 0.5 && std::fmod(lower, 2.0) != 0.0)) rounded = lower + 1.0;
  return static_cast<int64_t>(rounded);
}

CropRegion resize_crop_region_for_grid(int64_t grid_height, int64_t grid_width, int64_t target_width,
                                       int64_t target_height) {
  CVX_CHECK(grid_height > 0 && grid_width > 0 && target_width > 0 && target_height > 0,
            "resize_crop_region_for_grid: sizes must be positive, got grid ", grid_height, "x", grid_width, ", target ",
            target_height, "x", target_width);
  // Double arithmetic in the reference's order, e.g. (th / h) * w rather than th * w / h.
  const double h = static_cast<double>(grid_height), w = static_cast<double>(grid_width);
  const double th = static_cast<double>(target_height), tw = static_cast<double>(target_width);
  int64_t resize_height = 0, resize_width = 0;
  if (h / w > th / tw) {
    resize_height = target_height;
    resize_width = round_half_to_even(th / h * w);
  } else {
    resize_width = target_width;
    resize_height = round_half_to_even(tw / w * h);
  }
  const int64_t top = round_half_to_even(static_cast<double>(target_height - resize_height) / 2.0);
  const int64_t left = round_half_to_even(static_cast<double>(target_width - resize_width) / 2.0);
  return {top, left, top + resize_height, left + resize_width};
}

// -> cos, sin each [T*H*W, head_dim] float32
RotaryEmbedding rotary_pos_embed_3d(int64_t head_dim, std::optional<CropRegion> crops, int64_t grid_height,
                                    int64_t grid_width, int64_t temporal_size, const std::string& grid_type,
                                    std::optional<std::pair<int64_t, int64_t>> max_size, double theta,
                                    torch::Device device) {
  CVX_CHECK(head_dim > 0 && head_dim % 16 == 0, "rotary_pos_embed_3d: head_dim must be a positive multiple of 16, got ",
            head_dim);
  CVX_CHECK(grid_height > 0 && grid_width > 0 && temporal_size > 0,
            "rotary_pos_embed_3d: grid sizes must be positive, got ", temporal_size, "x", grid_height, "x", grid_width);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);

  torch::Tensor pos_t, pos_h, pos_w;  // [T], [H or max_h], [W or max_w]
  if (grid_type == "linspace") {
    CVX_CHECK(crops.has_value(), "rotary_pos_embed_3d: grid_type \"linspace\" needs a crop region");
    // End point stop * (n-1) / n (not start + (stop - start) * (n-1) / n): an exact integer product
    // divided once in double, as in the reference, then torch.linspace's own float32 evaluation.
    const auto end = [](int64_t stop, int64_t n) {
      return static_cast<double>(stop * (n - 1)) / static_cast<double>(n);
    };
    pos_h = torch::linspace(c10::Scalar(crops->top), c10::Scalar(end(crops->bottom, grid_height)), grid_height, f32);
    pos_w = torch::linspace(c10::Scalar(crops->left), c10::Scalar(end(crops->right, grid_width)), grid_width, f32);
    pos_t =
        torch::linspace(c10::Scalar(int64_t{0}), c10::Scalar(end(temporal_size, temporal_size)), temporal_size, f32);
  } else if (grid_type == "slice") {
    CVX_CHECK(max_size.has_value(), "rotary_pos_embed_3d: grid_type \"slice\" needs max_size");
    const auto [max_h, max_w] = *max_size;
    CVX_CHECK(grid_height <= max_h && grid_width <= max_w, "rotary_pos_embed_3d: grid ", grid_height, "x", grid_width,
              " exceeds max_size ", max_h, "x", max_w);
    // Tables over the full max_size range, cut afterwards, so every value comes from the same tensor
    // shapes (and thus the same vectorised/scalar kernel paths) as in the reference.
    pos_h = torch::arange(max_h, f32);
    pos_w = torch::arange(max_w, f32);
    pos_t = torch::arange(temporal_size, f32);
  } else {
    CVX_THROW("rotary_pos_embed_3d: grid_type must be \"linspace\" or \"slice\", got ", quote(grid_type));
  }

  const int64_t dim_t = head_dim / 4;
  const int64_t dim_hw = head_dim / 8 * 3;
  auto t = rotary_1d(dim_t, pos_t, theta);
  auto h = rotary_1d(dim_hw, pos_h, theta);
  auto w = rotary_1d(dim_hw, pos_w, theta);
  const auto rows = [](const torch::Tensor& table, int64_t n) { return table.slice(0, 0, n); };
  return {combine_axes(t.cos, rows(h.cos, grid_height), rows(w.cos, grid_width)),
          combine_axes(t.sin, rows(h.sin, grid_height), rows(w.sin, grid_width))};
}

// x [..., N, D], cos/sin [N, D] -> [..., N, D]
torch::Tensor apply_rotary_emb(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  CVX_CHECK(x.dim() >= 2, "apply_rotary_emb: x needs at least 2 dims [..., N, D], got shape ", x.sizes());
  const int64_t n = x.size(-2), d = x.size(-1);
  CVX_CHECK(d % 2 == 0, "apply_rotary_emb: the channel dim must be even, got ", d);
  CVX_CHECK(cos.dim() == 2 && cos.size(0) == n && cos.size(1) == d && sin.sizes() == cos.sizes(),
            "apply_rotary_emb: cos/sin must be [N, D] = [", n, ", ", d, "], got ", cos.sizes(), " and ", sin.sizes());

  // Channel pairs as a trailing dim of 2: views of x and of the tables, no rotated copy of x. Each
  // output is one product minus/plus another, rounded per op like the reference's
  // x * cos + rotate(x) * sin (negating a factor is exact, so a - b equals a + (-b)); fusing them
  // (addcmul, FMA) would round differently.
  auto pair_shape = x.sizes().vec();
  pair_shape.back() = d / 2;
  pair_shape.push_back(2);
  const auto xf = x.to(torch::kFloat32).reshape(pair_shape);                              // [..., N, D/2, 2]
  const auto xs = xf.unbind(-1);                                                          // 2 x [..., N, D/2]
  const auto cs = cos.to(x.device(), torch::kFloat32).reshape({n, d / 2, 2}).unbind(-1);  // 2 x [N, D/2]
  const auto ss = sin.to(x.device(), torch::kFloat32).reshape({n, d / 2, 2}).unbind(-1);

  const bool needs_graph =
      torch::GradMode::is_enabled() && (x.requires_grad() || cos.requires_grad() || sin.requires_grad());
  if (!needs_graph) {
    // Inference: the same ops written into the output's channel slots, one half-size scratch buffer.
    auto out = torch::empty_like(xf, torch::MemoryFormat::Contiguous);
    auto even = out.select(-1, 0), odd = out.select(-1, 1);
    torch::mul_out(even, xs[0], cs[0]);
    auto scratch = xs[1] * ss[0];
    even.sub_(scratch);
    torch::mul_out(odd, xs[1], cs[1]);
    torch::mul_out(scratch, xs[0], ss[1]);
    odd.add_(scratch);
    return out.flatten(-2).to(x.scalar_type());  // [..., N, D]
  }
  const auto even = xs[0] * cs[0] - xs[1] * ss[0];
  const auto odd = xs[1] * cs[1] + xs[0] * ss[1];
  return torch::stack({even, odd}, -1).flatten(-2).to(x.scalar_type());  // [..., N, D]
}

}  // namespace cvx
