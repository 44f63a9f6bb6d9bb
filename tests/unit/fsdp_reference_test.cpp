// The engine on one rank against plain libtorch training of the same model: the same loss, the
// gradients torch's autograd gives, clipped as torch::nn::utils::clip_grad_norm_ clips them, and
// the parameters torch::optim::AdamW makes of them. (The MPI suite then compares 1 rank with 2
// and 4.) Tolerance: the engine sums squared gradients in fp64 over flat shards, torch takes fp32
// norms per tensor — the clipping coefficient differs in the 7th digit; everything else is the
// same arithmetic.
#include <gtest/gtest.h>

#include "cvx/dist/fake_communicator.h"
#include "engine_test_util.h"

TEST(FsdpReference, OneRankStepEqualsPlainTorchTraining) {
  for (const bool lora : {true, false}) {
    for (const bool recompute : {true, false}) {
      SCOPED_TRACE(std::string(lora ? "LoRA" : "full") + (recompute ? ", recompute" : ", kept activations"));
      cvx::test::EngineRunOptions o;
      o.lora = lora;
      o.fsdp.recompute = recompute;
      o.max_grad_norm = 0.05;  // small enough to clip
      cvx::FakeCommunicator one(0, 1);
      cvx::test::EngineRun run(one, o);
      const double loss = run.step(0);

      auto plain = cvx::test::make_test_model(o);
      std::vector<torch::Tensor> params;
      std::vector<std::string> names;
      for (const auto& item : plain->named_parameters())
        if (item.value().requires_grad()) {
          params.push_back(item.value());
          names.push_back(item.key());
        }
      const auto plain_loss = cvx::test::test_loss(plain, 0, o.global_batch);
      EXPECT_NEAR(loss, plain_loss.item<double>(), 1e-6 * std::abs(loss));
      plain_loss.backward();
      const double norm = torch::nn::utils::clip_grad_norm_(params, o.max_grad_norm);
      EXPECT_NEAR(run.last_grad_norm(), norm, 1e-5 * norm);
      EXPECT_GT(norm, o.max_grad_norm);
      torch::optim::AdamW adamw(
          params, torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).eps(o.adam_epsilon).weight_decay(1e-4));
      adamw.step();
      const auto state = run.full_state(/*trainable_only=*/true);
      ASSERT_EQ(state.size(), params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        ASSERT_TRUE(state.count(names[i])) << names[i];
        const double diff = (state.at(names[i]) - params[i].detach()).abs().max().item<double>();
        EXPECT_LE(diff, 1e-6) << names[i];
      }
    }
  }
}
