// Fixed 3D sin-cos positional table (diffusers get_3d_sincos_pos_embed, output_type "pt").
#include "cvx/core/error.h"
#include "cvx/model/embeddings.h"

namespace cvx {
namespace {

// diffusers get_1d_sincos_pos_embed_from_grid: omega in float64, positions promoted from float32.
// pos [M] -> [M, dim] float64, [sin | cos]
torch::Tensor sincos_1d(int64_t dim, const torch::Tensor& pos) {
  CVX_CHECK(dim % 2 == 0, "sincos_pos_embed_3d: every axis needs an even width, got ", dim);
  auto omega = torch::arange(dim / 2, pos.options().dtype(torch::kFloat64));
  omega = omega / (static_cast<double>(dim) / 2.0);
  omega = torch::pow(10000, omega).reciprocal();          // the reference's 1.0 / 10000**omega
  const auto out = torch::outer(pos.reshape(-1), omega);  // float32 x float64 -> float64, [M, dim/2]
  return torch::cat({torch::sin(out), torch::cos(out)}, 1);
}

}  // namespace

// -> [T, H*W, D] float64
torch::Tensor sincos_pos_embed_3d(int64_t embed_dim, int64_t grid_height, int64_t grid_width, int64_t temporal_size,
                                  double spatial_interpolation_scale, double temporal_interpolation_scale,
                                  torch::Device device) {
  CVX_CHECK(embed_dim > 0 && embed_dim % 4 == 0,
            "sincos_pos_embed_3d: embed_dim must be a positive multiple of 4, got ", embed_dim);
  CVX_CHECK(grid_height > 0 && grid_width > 0 && temporal_size > 0,
            "sincos_pos_embed_3d: grid sizes must be positive, got ", temporal_size, "x", grid_height, "x", grid_width);
  const int64_t dim_spatial = 3 * embed_dim / 4;
  const int64_t dim_temporal = embed_dim / 4;
  CVX_CHECK(dim_spatial % 2 == 0, "sincos_pos_embed_3d: embed_dim ", embed_dim,
            " gives an odd spatial width (embed_dim must be a multiple of 16)");
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);

  // Positions are float32 (arange / scale rounds to float32) before the float64 outer product.
  const auto pos_h = torch::arange(grid_height, f32) / spatial_interpolation_scale;
  const auto pos_w = torch::arange(grid_width, f32) / spatial_interpolation_scale;
  // Flat spatial index r * W + c; the width coordinate fills the first half of the spatial part.
  const auto w_of_token = pos_w.unsqueeze(0).expand({grid_height, grid_width});
  const auto h_of_token = pos_h.unsqueeze(1).expand({grid_height, grid_width});
  const auto spatial = torch::cat({sincos_1d(dim_spatial / 2, w_of_token), sincos_1d(dim_spatial / 2, h_of_token)},
                                  1);  // [H*W, 3D/4]

  const auto pos_t = torch::arange(temporal_size, f32) / temporal_interpolation_scale;
  const auto temporal = sincos_1d(dim_temporal, pos_t);  // [T, D/4]

  const int64_t tokens = grid_height * grid_width;
  return torch::cat({temporal.unsqueeze(1).expand({temporal_size, tokens, dim_temporal}),
                     spatial.unsqueeze(0).expand({temporal_size, tokens, dim_spatial})},
                    2);  // [T, H*W, D]
}

}  // namespace cvx
