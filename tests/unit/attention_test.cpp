#include "cvx/model/attention.h"

#include <gtest/gtest.h>

#include <cmath>

namespace {
torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  return torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1).matmul(v);
}
}  // namespace

// Values and gradients of the attention function equal the textbook formulation (float64), for
// non-contiguous inputs as the transformer passes them.
TEST(Attention, MatchesTheMathFormulationWithGradients) {
  torch::manual_seed(0);
  auto make = [] { return torch::randn({2, 5, 3, 8}, torch::kFloat64).transpose(1, 2).requires_grad_(true); };
  auto q = make(), k = make(), v = make();  // [B, H, S, Dh], non-contiguous
  const auto out = cvx::scaled_dot_product_attention(q, k, v);
  const auto expected = reference_attention(q, k, v);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-12, 1e-12));
  const auto weight = torch::randn_like(out);
  const auto grads = torch::autograd::grad({(out * weight).sum()}, {q, k, v});
  const auto expected_grads = torch::autograd::grad({(expected * weight).sum()}, {q, k, v});
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(torch::allclose(grads[i], expected_grads[i], 1e-10, 1e-10)) << "input " << i;
}

TEST(Attention, LongerKeysThanQueriesAndFloat32) {
  auto q = torch::randn({1, 2, 4, 16}), k = torch::randn({1, 2, 9, 16}), v = torch::randn({1, 2, 9, 16});
  EXPECT_TRUE(torch::allclose(cvx::scaled_dot_product_attention(q, k, v), reference_attention(q, k, v), 1e-5, 1e-6));
}
