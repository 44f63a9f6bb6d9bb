// AdamW on the local fp32 master shards: element-wise, so a sharded step equals the unsharded one
// (the same arithmetic as torch.optim.AdamW's single-tensor path: decoupled weight decay, bias
// correction), with state (exp_avg, exp_avg_sq) shaped like the shards it updates.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace cvx {

struct AdamWOptions {
  double beta1 = 0.9;  // the official CogVideoX fine-tuning defaults
  double beta2 = 0.95;
  double epsilon = 1e-8;
  double weight_decay = 1e-4;
};

class ShardedAdamW {
 public:
  struct Param {
    std::string id;  // names the state in checkpoints
    torch::Tensor master, grad;
  };
  ShardedAdamW(std::vector<Param> params, AdamWOptions options);

  // One update of every master from its gradient at learning rate `lr`.
  void step(double lr);
  int64_t step_count() const { return step_; }

  void set_step_count(int64_t step) { step_ = step; }
  const std::vector<Param>& params() const { return params_; }
  // Aligned with params(); the tensors are the state itself (a checkpoint copies into them).
  const std::vector<torch::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<torch::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<Param> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

}  // namespace cvx
