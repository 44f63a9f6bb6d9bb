// A tiny CogVideoX transformer trained through the sharded engine, for the engine's tests: the
// same model and the same global batch on any communicator, so runs on 1, 2 and 4 ranks (or a
// fake world) can be compared.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/sharded_adamw.h"
#include "cvx/dist/sharded_state.h"
#include "cvx/model/lora.h"
#include "cvx/model/transformer.h"

namespace cvx::test {

struct EngineRunOptions {
  std::string variant = "5b";
  bool lora = true;  // else full fine-tuning
  int64_t num_layers = 4;
  int64_t global_batch = 4;  // samples per optimizer step, split evenly over the ranks
  int64_t accumulation = 1;  // micro-steps per optimizer step
  double lr = 1e-3;
  double max_grad_norm = 1.0;
  // Above the default 1e-8 on purpose: some gradients are zero in exact arithmetic (a LayerNorm
  // bias of the keys shifts every score of a row equally, which softmax ignores) and only rounding
  // noise of ~1e-10 remains, which AdamW's first step turns into a +-lr move when epsilon is far
  // below it. With 1e-5 such elements move by less than lr x 1e-4 while every real gradient
  // (>= 1e-4 here) still takes a full AdamW step, so runs that sum in another order agree.
  double adam_epsilon = 1e-5;
  FsdpOptions fsdp;
  uint64_t seed = 11;
  torch::Device device = torch::kCPU;  // the engine's shards and the inputs (the model starts on the CPU)
};

// The run's model, initialised from the seed: every rank and every world size starts from the
// same weights. LoRA: adapters (with a non-zero B) on attention and proj_out, the rest frozen.
inline CogVideoXTransformer make_test_model(const EngineRunOptions& options) {
  torch::manual_seed(static_cast<int64_t>(options.seed));
  TransformerConfig config = tiny_transformer(options.variant);
  config.num_layers = options.num_layers;
  CogVideoXTransformer model(config);
  if (options.lora) {
    LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 8;
    lora.target_modules = {"to_q", "to_k", "to_v", "to_out.0", "proj_out"};
    inject_lora(*model, lora);
    mark_only_lora_trainable(*model);
    // B starts at zero (no gradient for A at step 1); a non-zero B exercises every gradient.
    torch::NoGradGuard no_grad;
    for (auto& p : lora_parameters(*model)) p.normal_(0, 0.05);
  }
  return model;
}

// Sample `index` of the synthetic dataset: the same on every rank.
struct TestSample {
  torch::Tensor latents, text, target, timestep;
};
inline TestSample test_sample(const TransformerConfig& config, int64_t index) {
  auto gen = at::detail::createCPUGenerator(1000 + static_cast<uint64_t>(index));
  const int64_t frames = config.patch_size_t ? 2 : 3;
  TestSample s;
  s.latents = torch::randn({1, frames, config.in_channels, 6, 8}, gen);
  s.text = torch::randn({1, 12, config.text_embed_dim}, gen);
  s.target = torch::randn({1, frames, config.out_channels, 6, 8}, gen);
  s.timestep = torch::randint(0, 1000, {1}, gen, torch::kLong);
  return s;
}

// The loss of samples [first, first + n): mean squared error of the velocity against the target.
inline torch::Tensor test_loss(CogVideoXTransformer& model, int64_t first, int64_t n,
                               const torch::Device& device = torch::kCPU) {
  std::vector<torch::Tensor> latents, text, target, timestep;
  for (int64_t i = 0; i < n; ++i) {
    const auto s = test_sample(model->config, first + i);
    latents.push_back(s.latents);
    text.push_back(s.text);
    target.push_back(s.target);
    timestep.push_back(s.timestep);
  }
  const auto x = torch::cat(latents).to(device);
  auto rope = training_rotary_embedding(model->config, 6, 8, x.size(1));
  if (rope.cos.defined()) rope = {rope.cos.to(device), rope.sin.to(device)};
  const auto out = model->forward(x, torch::cat(text).to(device), torch::cat(timestep).to(device), std::nullopt,
                                  rope.cos.defined() ? &rope : nullptr);
  return (out - torch::cat(target).to(device)).pow(2).mean();
}

// One rank's share of the run.
class EngineRun {
 public:
  // `replicate`: the group replicas of `comm` average their gradients over (hybrid sharding).
  EngineRun(Communicator& comm, const EngineRunOptions& options, Communicator* replicate = nullptr)
      : comm_(comm), options_(options), model_(make_test_model(options)) {
    engine_ = std::make_unique<FsdpEngine>(model_->sharding_units(), comm, options.fsdp, options.device, replicate);
    if (options.fsdp.precision.param_dtype) model_->set_compute_dtype(*options.fsdp.precision.param_dtype);
    model_->set_block_runner(engine_->runner());
    std::vector<ShardedAdamW::Param> params;
    for (auto& s : engine_->trainable_shards()) params.push_back({s.id, s.master, s.grad});
    AdamWOptions adam;
    adam.epsilon = options.adam_epsilon;
    optimizer_ = std::make_unique<ShardedAdamW>(params, adam);
  }
  ~EngineRun() { model_->set_block_runner({}); }

  // One optimizer step on samples [step * G + offset, (step + 1) * G + offset): this rank takes its
  // even share of each micro-step. Returns the mean loss over the group (all its ranks agree).
  double step(int64_t step_index, int64_t sample_offset = 0) {
    const int64_t g = options_.global_batch, a = options_.accumulation;
    const int64_t per_micro = g / a, per_rank = per_micro / comm_.size();
    engine_->zero_grad();
    double loss_sum = 0;
    for (int64_t m = 0; m < a; ++m) {
      const int64_t first = sample_offset + step_index * g + m * per_micro + comm_.rank() * per_rank;
      const auto loss = test_loss(model_, first, per_rank, options_.device);
      engine_->backward(loss / static_cast<double>(a));
      loss_sum += loss.item<double>();  // (a device sync: tests only)
    }
    auto total = torch::tensor({loss_sum / static_cast<double>(a)}, torch::kFloat64);
    comm_.all_reduce(total, ReduceOp::avg)->wait();
    last_grad_norm_ = engine_->clip_grad_norm(options_.max_grad_norm);
    optimizer_->step(options_.lr);
    engine_->after_optimizer_step();
    return total.item<double>();
  }

  // Every tensor's full value (fp32 masters for trainable ones), on rank 0 of the group.
  std::map<std::string, torch::Tensor> full_state(bool trainable_only = false) {
    std::map<std::string, torch::Tensor> out;
    gather_full_state(
        *engine_, [&](const std::string& name, const torch::Tensor& value) { out[name] = value.clone(); },
        trainable_only);
    return out;
  }

  double last_grad_norm() const { return last_grad_norm_; }
  FsdpEngine& engine() { return *engine_; }
  ShardedAdamW& optimizer() { return *optimizer_; }
  CogVideoXTransformer& model() { return model_; }

 private:
  Communicator& comm_;
  EngineRunOptions options_;
  CogVideoXTransformer model_{nullptr};
  std::unique_ptr<FsdpEngine> engine_;
  std::unique_ptr<ShardedAdamW> optimizer_;
  double last_grad_norm_ = 0;
};

}  // namespace cvx::test
