// Scaled dot-product attention through one function: the fused kernels (flash / memory-efficient,
// memory linear in sequence length) on libtorch 2.x, the math formulation on 1.13.
#pragma once
#include <torch/torch.h>

namespace cvx {

// q, k, v: [B, H, S, Dh] -> [B, H, S, Dh]; no mask, no dropout, scale 1/sqrt(Dh).
torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace cvx
