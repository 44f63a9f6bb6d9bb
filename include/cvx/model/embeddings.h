// Positional and timestep embeddings of the CogVideoX transformer, reproducing diffusers v0.32.2
// (models/embeddings.py, pipelines/cogvideo) bit for bit on the same torch kernels: every helper
// performs the reference's ops in the reference's dtypes and order, because a different but
// mathematically equal formula rounds differently.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace cvx {

// Sinusoidal timestep embedding (diffusers get_timestep_embedding / Timesteps):
// freq_k = exp(-ln(max_period) * k / (dim/2 - downscale_freq_shift)), arg = scale * t * freq_k,
// [sin | cos], swapped to [cos | sin] when flip_sin_to_cos; an odd dim gets a zero last column.
// Computed in float32 on the device of `timesteps` (any numeric dtype).
// [N] -> [N, dim] float32
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos = true,
                                 double downscale_freq_shift = 0.0, double scale = 1.0, double max_period = 10000.0);

// diffusers get_3d_sincos_pos_embed(embed_dim, spatial_size = (grid_width, grid_height), temporal_size,
// ..., output_type="pt"): the fixed table of the 2B patch embedding. Row t, column r * grid_width + c
// holds [temporal (D/4) | width coordinate c (3D/8) | height coordinate r (3D/8)], each part
// [sin | cos] (the width coordinate comes first: that is what the reference computes).
// -> [temporal_size, grid_height * grid_width, embed_dim] float64
torch::Tensor sincos_pos_embed_3d(int64_t embed_dim, int64_t grid_height, int64_t grid_width, int64_t temporal_size,
                                  double spatial_interpolation_scale, double temporal_interpolation_scale,
                                  torch::Device device = torch::kCPU);

// Crop region of the CogVideoX 1.0 RoPE grid: ((top, left), (bottom, right)) in base-grid units.
struct CropRegion {
  int64_t top = 0, left = 0, bottom = 0, right = 0;
};
inline bool operator==(const CropRegion& a, const CropRegion& b) {
  return a.top == b.top && a.left == b.left && a.bottom == b.bottom && a.right == b.right;
}

// The pipelines' get_resize_crop_region_for_grid((grid_height, grid_width), target_width, target_height)
// (argument order as in the reference: width before height). Rounds like Python's round(): half to even.
CropRegion resize_crop_region_for_grid(int64_t grid_height, int64_t grid_width, int64_t target_width,
                                       int64_t target_height);

// Python's round() of a double: nearest integer, ties to even (round(2.5) == 2, round(3.5) == 4).
int64_t round_half_to_even(double value);

// Real-valued RoPE tables; each [temporal_size * grid_height * grid_width, head_dim] float32, rows in
// video token order (frame, patch row, patch column), columns [t (D/4) | h (3D/8) | w (3D/8)] with every
// frequency repeated twice (c0, c0, c1, c1, ...).
struct RotaryEmbedding {
  torch::Tensor cos, sin;
};

// diffusers get_3d_rotary_pos_embed(head_dim, crops, (grid_height, grid_width), temporal_size, theta,
// use_real=True, grid_type, max_size).
//   grid_type "linspace" (CogVideoX 1.0 pipelines): positions linspace(start, stop * (n-1)/n, n) over the
//     crop region; `crops` is required.
//   grid_type "slice" (CogVideoX 1.5 and the finetune recipe): integer positions; the tables are built for
//     max_size = (max_height, max_width) and the first grid_height / grid_width rows kept; `max_size` is
//     required.
// head_dim must be a multiple of 16 (every axis needs an even width and the three must add up to it).
RotaryEmbedding rotary_pos_embed_3d(int64_t head_dim, std::optional<CropRegion> crops, int64_t grid_height,
                                    int64_t grid_width, int64_t temporal_size, const std::string& grid_type,
                                    std::optional<std::pair<int64_t, int64_t>> max_size = std::nullopt,
                                    double theta = 10000.0, torch::Device device = torch::kCPU);

// diffusers apply_rotary_emb(x, (cos, sin), use_real=True, use_real_unbind_dim=-1): rotates interleaved
// channel pairs (2j, 2j+1):
//   out[2j]   = x[2j]   * cos[2j]   - x[2j+1] * sin[2j]
//   out[2j+1] = x[2j+1] * cos[2j+1] + x[2j]   * sin[2j+1]
// computed in float32 and cast back to x's dtype. Differentiable in x (and in cos/sin).
// x [..., N, D], cos/sin [N, D] -> [..., N, D] (contiguous)
torch::Tensor apply_rotary_emb(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace cvx
