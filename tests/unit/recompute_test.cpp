// The recomputation node under activation checkpointing and under the sharding engine's hooks.
#include <gtest/gtest.h>

#include "cvx/core/recompute.h"
#include "cvx/core/tensor_storage.h"

namespace {
using torch::autograd::variable_list;

struct Tiny {
  torch::Tensor w1 = torch::randn({4, 5}).requires_grad_(true);
  torch::Tensor w2 = torch::randn({5, 3}).requires_grad_(true);
  int calls = 0;
  cvx::UnitFn fn() {
    return [this](const variable_list& in) {
      ++calls;
      return variable_list{torch::tanh(torch::mm(torch::dropout(torch::mm(in[0], w1), 0.3, true), w2))};
    };
  }
};

// Reference: the same function with plain autograd, same dropout masks (seeded).
std::vector<torch::Tensor> reference_grads(Tiny& t, const torch::Tensor& x) {
  torch::manual_seed(5);
  auto in = x.detach().requires_grad_(true);
  t.fn()({in})[0].pow(2).sum().backward();
  std::vector<torch::Tensor> out{in.grad().clone(), t.w1.grad().clone(), t.w2.grad().clone()};
  t.w1.mutable_grad().reset();
  t.w2.mutable_grad().reset();
  return out;
}
}  // namespace

TEST(Recompute, CheckpointGivesPlainAutogradGradientsWithReplayedDropout) {
  torch::manual_seed(1);
  Tiny t;
  const auto x = torch::randn({2, 4});
  const auto expected = reference_grads(t, x);
  torch::manual_seed(5);
  auto in = x.detach().requires_grad_(true);
  t.calls = 0;
  cvx::checkpoint(t.fn(), {in}, {t.w1, t.w2})[0].pow(2).sum().backward();
  EXPECT_EQ(t.calls, 2);  // forward + recomputation
  EXPECT_TRUE(torch::allclose(in.grad(), expected[0]));
  EXPECT_TRUE(torch::allclose(t.w1.grad(), expected[1]));
  EXPECT_TRUE(torch::allclose(t.w2.grad(), expected[2]));
}

TEST(Recompute, HooksRunInOrderAndTakeTheParameterGradientsInsteadOfAutograd) {
  for (const bool keep : {false, true}) {
    SCOPED_TRACE(keep ? "keep activations" : "recompute");
    torch::manual_seed(2);
    Tiny t;
    const auto x = torch::randn({2, 4});
    const auto expected = reference_grads(t, x);
    std::vector<std::string> events;
    variable_list received;
    cvx::RecomputeHooks hooks;
    hooks.before_forward = [&] { events.push_back("before_forward"); };
    hooks.after_forward = [&] { events.push_back("after_forward"); };
    hooks.before_backward = [&] { events.push_back("before_backward"); };
    hooks.on_param_grads = [&](const variable_list& g) {
      events.push_back("grads");
      received = g;
    };
    hooks.after_backward = [&] { events.push_back("after_backward"); };
    torch::manual_seed(5);
    auto in = x.detach().requires_grad_(true);
    t.calls = 0;
    auto out = cvx::run_recomputed(t.fn(), {in}, {t.w1, t.w2}, hooks, keep);
    EXPECT_EQ(events, (std::vector<std::string>{"before_forward", "after_forward"}));
    out[0].pow(2).sum().backward();
    EXPECT_EQ(events, (std::vector<std::string>{"before_forward", "after_forward", "before_backward", "grads",
                                                "after_backward"}));
    EXPECT_EQ(t.calls, keep ? 1 : 2);
    ASSERT_EQ(received.size(), 2u);
    EXPECT_TRUE(torch::allclose(received[0], expected[1]));
    EXPECT_TRUE(torch::allclose(received[1], expected[2]));
    EXPECT_FALSE(t.w1.grad().defined());  // delivered to the hook only
    EXPECT_TRUE(torch::allclose(in.grad(), expected[0]));
  }
}

// LoRA on a frozen base: the first block's input needs no gradient, yet the node must run in
// backward to hand the adapters' gradients to the hook.
TEST(Recompute, NodeRunsInBackwardWhenNoInputRequiresGrad) {
  Tiny t;
  const auto x = torch::randn({2, 4});
  bool got = false;
  cvx::RecomputeHooks hooks;
  hooks.on_param_grads = [&](const variable_list& g) { got = g[0].defined() && g[1].defined(); };
  auto out = cvx::run_recomputed(t.fn(), {x}, {t.w1, t.w2}, hooks);
  ASSERT_TRUE(out[0].requires_grad());
  out[0].sum().backward();
  EXPECT_TRUE(got);
}

// What the engine does under ZeRO-3 without recomputation: the parameters' storage is dropped
// after forward and regrown (same StorageImpl, new bytes written) before backward; the kept graph
// reads the restored values.
TEST(Recompute, KeptGraphReadsParametersRestoredIntoTheSameStorage) {
  torch::manual_seed(3);
  auto flat = torch::randn({20});
  const auto saved = flat.clone();
  auto w = torch::empty({4, 5}).requires_grad_(true);
  {
    torch::NoGradGuard no_grad;
    w.set_data(flat.narrow(0, 0, 20).view({4, 5}));
  }
  const auto x = torch::randn({3, 4}).requires_grad_(true);
  cvx::RecomputeHooks hooks;
  hooks.after_forward = [&] { cvx::free_storage(flat); };
  hooks.before_backward = [&] {
    cvx::allocate_storage(flat, 20 * sizeof(float));
    flat.copy_(saved);
  };
  hooks.on_param_grads = [](const variable_list&) {};
  auto fn = [&](const variable_list& in) { return variable_list{torch::mm(in[0], w).sin()}; };
  auto out = cvx::run_recomputed(fn, {x}, {w}, hooks, /*keep_activations=*/true);
  EXPECT_FALSE(cvx::is_materialized(w));
  out[0].sum().backward();
  const auto expected = torch::mm(torch::mm(x.detach(), saved.view({4, 5})).cos(), saved.view({4, 5}).t());
  EXPECT_TRUE(torch::allclose(x.grad(), expected));
}

TEST(TensorStorage, UnmaterializedTensorsHaveShapesButNoBytesAndRegrowInPlace) {
  auto t = cvx::unmaterialized_tensor({3, 7}, torch::dtype(torch::kBFloat16));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(t.storage().nbytes(), 0u);
  EXPECT_FALSE(cvx::is_materialized(t));
  auto flat = torch::arange(10, torch::kFloat32);
  const auto view = flat.narrow(0, 2, 6).view({2, 3});
  EXPECT_TRUE(cvx::is_materialized(view));
  cvx::free_storage(flat);
  EXPECT_FALSE(cvx::is_materialized(view));
  cvx::allocate_storage(flat, 10 * sizeof(float));
  EXPECT_TRUE(cvx::is_materialized(view));
  flat.fill_(4.0);
  EXPECT_EQ(view.sum().item<double>(), 24.0);
}
