// Scaled dot-product attention through one function: the fused kernels (flash / memory-efficient,
// memory linear in sequence length) on libtorch 2.x, the math formulation on 1.13.
#pragma once
#include <torch/torch.h>

#include <functional>

namespace cvx {

// q, k, v: [B, H, S, Dh] -> [B, H, S, Dh]; no mask, no dropout, scale 1/sqrt(Dh).
torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// The model's second seam (sequence parallelism installs one): the attention core of every block
// as runner(q, k, v, text_len), q, k, v [B, H, L + N, Dh] with the L text tokens first ->
// [B, H, L + N, Dh]. Empty: scaled_dot_product_attention.
using AttentionRunner =
    std::function<torch::Tensor(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t)>;

}  // namespace cvx
