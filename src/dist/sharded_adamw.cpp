#include "cvx/dist/sharded_adamw.h"

#include <cmath>

#include "cvx/core/error.h"

namespace cvx {

ShardedAdamW::ShardedAdamW(std::vector<Param> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  CVX_CHECK_AS(ConfigError, options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
               "AdamW betas must be in [0, 1)");
  CVX_CHECK_AS(ConfigError, options.epsilon > 0 && options.weight_decay >= 0,
               "AdamW needs epsilon > 0 and weight_decay >= 0");
  for (const auto& p : params_) {
    CVX_CHECK(p.master.defined() && p.grad.defined() && p.master.sizes() == p.grad.sizes(), "AdamW: parameter ",
              quote(p.id), " needs a master and a gradient of the same shape");
    CVX_CHECK(p.master.scalar_type() == torch::kFloat32, "AdamW: master ", quote(p.id), " must be fp32");
    exp_avg_.push_back(torch::zeros_like(p.master));
    exp_avg_sq_.push_back(torch::zeros_like(p.master));
  }
}

void ShardedAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(b2, static_cast<double>(step_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].master;
    const auto g = params_[i].grad.to(torch::kFloat32);
    p.mul_(1 - lr * options_.weight_decay);
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    const auto denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(options_.epsilon);
    p.addcdiv_(exp_avg_[i], denom, -lr / bias1);
  }
}

}  // namespace cvx
