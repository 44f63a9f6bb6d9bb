#include "cvx/model/attention.h"

#include <torch/version.h>

namespace cvx {

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  // 1.13 has only the private op, which computes softmax(q k^T / sqrt(Dh)) v in the math path.
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v));
#endif
}

}  // namespace cvx
