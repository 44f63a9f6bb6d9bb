// ShardedAdamW against libtorch's own torch::optim::AdamW (the C++ port of torch.optim.AdamW):
// the same updates for the same gradients, and a tensor updated in two shards equals the whole.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/sharded_adamw.h"

TEST(ShardedAdamW, MatchesTorchAdamWStepByStep) {
  torch::manual_seed(4);
  const auto initial = torch::randn({257});
  auto reference = initial.clone().requires_grad_(true);
  torch::optim::AdamW torch_adamw({reference},
                                  torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(1e-4));
  auto master = initial.clone();
  auto grad = torch::zeros_like(master);
  cvx::ShardedAdamW ours({{"p", master, grad}}, {});
  for (int step = 0; step < 10; ++step) {
    const auto g = torch::randn({257}) * (step + 1);
    reference.mutable_grad() = g.clone();
    torch_adamw.step();
    grad.copy_(g);
    ours.step(1e-3);
    // The same operations in the same order: bit for bit.
    EXPECT_TRUE(torch::equal(master, reference.detach())) << "step " << step;
  }
  EXPECT_EQ(ours.step_count(), 10);
}

TEST(ShardedAdamW, TwoShardsStepExactlyAsTheWholeTensor) {
  torch::manual_seed(5);
  auto whole = torch::randn({100}), whole_grad = torch::zeros({100});
  auto left = whole.narrow(0, 0, 37).clone(), right = whole.narrow(0, 37, 63).clone();
  auto left_grad = torch::zeros({37}), right_grad = torch::zeros({63});
  cvx::ShardedAdamW one({{"w", whole, whole_grad}}, {});
  cvx::ShardedAdamW two({{"l", left, left_grad}, {"r", right, right_grad}}, {});
  for (int step = 0; step < 5; ++step) {
    const auto g = torch::randn({100});
    whole_grad.copy_(g);
    left_grad.copy_(g.narrow(0, 0, 37));
    right_grad.copy_(g.narrow(0, 37, 63));
    one.step(2e-3);
    two.step(2e-3);
  }
  EXPECT_TRUE(torch::equal(torch::cat({left, right}), whole));
}

TEST(ShardedAdamW, RefusesBadOptionsAndMismatchedShapes) {
  cvx::AdamWOptions bad;
  bad.beta2 = 1.0;
  EXPECT_THROW(cvx::ShardedAdamW({}, bad), cvx::ConfigError);
  EXPECT_THROW(cvx::ShardedAdamW({{"x", torch::zeros({3}), torch::zeros({4})}}, {}), cvx::Error);
  EXPECT_THROW(cvx::ShardedAdamW({{"x", torch::zeros({3}, torch::kBFloat16), torch::zeros({3})}}, {}), cvx::Error);
}
