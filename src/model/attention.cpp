#include "cvx/model/attention.h"

#include <torch/version.h>

#include <cmath>

namespace cvx {

#if TORCH_VERSION_MAJOR < 2
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The math formulation with a hand-written backward, for libtorch 1.13 (which has no fused
// kernels). Against autograd through matmul/softmax it writes the scores once and normalises them
// in place, and in backward uses softmax's identity dS = P * (dP - rowsum(dO * O)) in place, so a
// CPU training step does a third fewer passes over the [S, S] score matrices.
struct MathAttention : public torch::autograd::Function<MathAttention> {
  // q, k, v [B, H, S, Dh] -> [B, H, S, Dh]
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
    const auto sizes = q.sizes().vec();
    const int64_t batch = sizes[0] * sizes[1], seq = sizes[2], head_dim = sizes[3];
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    const auto q3 = q.contiguous().view({batch, seq, head_dim});
    const auto k3 = k.contiguous().view({batch, k.size(2), head_dim});
    const auto v3 = v.contiguous().view({batch, v.size(2), head_dim});
    auto probs = torch::empty({batch, seq, k3.size(1)}, q.options());
    at::baddbmm_out(probs, probs, q3, k3.transpose(1, 2), /*beta=*/0, /*alpha=*/scale);
    at::_softmax_out(probs, probs, -1, false);
    auto out = at::bmm(probs, v3);
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({q3, k3, v3, probs, out});
    return out.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &q3 = saved[0], &k3 = saved[1], &v3 = saved[2], &probs = saved[3], &out = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto sizes = grad_outputs[0].sizes().vec();
    const auto d_out = grad_outputs[0].contiguous().view(out.sizes());
    const auto d_v = at::bmm(probs.transpose(1, 2), d_out);
    auto d_scores = at::bmm(d_out, v3.transpose(1, 2));          // dP
    const auto delta = (d_out * out).sum(-1, /*keepdim=*/true);  // rowsum(dP * P)
    d_scores.sub_(delta).mul_(probs);                            // dS
    auto d_q = torch::empty_like(q3);
    at::baddbmm_out(d_q, d_q, d_scores, k3, 0, scale);
    auto d_k = torch::empty_like(k3);
    at::baddbmm_out(d_k, d_k, d_scores.transpose(1, 2), q3, 0, scale);
    auto shape_of = [&](const torch::Tensor& t, int64_t len) { return t.view({sizes[0], sizes[1], len, sizes[3]}); };
    return {shape_of(d_q, q3.size(1)), shape_of(d_k, k3.size(1)), shape_of(d_v, v3.size(1))};
  }
};
}  // namespace
#endif

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  return MathAttention::apply(q, k, v);
#endif
}

}  // namespace cvx
