#include "cvx/model/lora_linear.h"

#include <cmath>
#include <ostream>

#include "cvx/core/error.h"
#include "cvx/core/module_lock.h"

namespace cvx {

LoRALinearImpl::LoRALinearImpl(int64_t in_features, int64_t out_features, bool with_bias, const ModuleInit& init)
    : in_features_(in_features), out_features_(out_features) {
  CVX_CHECK_AS(ConfigError, in_features > 0 && out_features > 0, "LoRALinear needs positive sizes (got in ",
               in_features, ", out ", out_features, ")");
  weight = register_parameter("weight", new_parameter({out_features, in_features}, init));
  if (with_bias) bias = register_parameter("bias", new_parameter({out_features}, init));
  if (init.materialize) reset_parameters();
}

void LoRALinearImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
    bias.uniform_(-bound, bound);
  }
}

torch::Tensor LoRALinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor result = torch::linear(x, weight, bias);
  if (!has_lora() || merged_) return result;
  const auto result_dtype = result.scalar_type();
  torch::Tensor h = x.to(lora_A->weight.scalar_type());
  if (dropout_ > 0.0) h = torch::dropout(h, dropout_, is_training());
  // PEFT order: result + lora_B(lora_A(x)) * scaling, then back to the base output dtype.
  result = result + lora_B->forward(lora_A->forward(h)) * scaling();
  return result.to(result_dtype);
}

void LoRALinearImpl::enable_lora(int64_t rank, double alpha, double dropout, torch::Dtype dtype, bool materialize) {
  CVX_CHECK_AS(ConfigError, rank > 0, "LoRA rank must be > 0 (got ", rank, ")");
  CVX_CHECK_AS(ConfigError, std::isfinite(alpha), "LoRA alpha must be finite (got ", alpha, ")");
  CVX_CHECK_AS(ConfigError, dropout >= 0.0 && dropout < 1.0, "LoRA dropout must be in [0, 1) (got ", dropout, ")");
  CVX_CHECK_AS(ConfigError, c10::isFloatingType(dtype), "LoRA parameters need a floating-point dtype");
  CVX_CHECK(!merged_, "cannot replace a merged LoRA adapter: unmerge() first");
  check_module_unlocked(*this, "add a LoRA adapter");
  if (has_lora()) {
    unregister_module("lora_A");
    unregister_module("lora_B");
  }
  torch::nn::Linear a(torch::nn::LinearOptions(in_features_, rank).bias(false));
  torch::nn::Linear b(torch::nn::LinearOptions(rank, out_features_).bias(false));
  {
    torch::NoGradGuard no_grad;
    // Drawn in float32 on the CPU whatever the target, so a seed gives the same adapter (up to
    // rounding) for every dtype and device.
    torch::nn::init::kaiming_uniform_(a->weight, std::sqrt(5.0));
    b->weight.zero_();
  }
  apply_init(*a, {dtype, weight.device(), materialize});
  apply_init(*b, {dtype, weight.device(), materialize});
  lora_A = register_module("lora_A", a);
  lora_B = register_module("lora_B", b);
  alpha_ = alpha;
  dropout_ = dropout;
  multiplier_ = 1.0;
}

void LoRALinearImpl::disable_lora() {
  if (!has_lora()) return;
  check_module_unlocked(*this, "remove a LoRA adapter");
  if (merged_) unmerge();
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = torch::nn::Linear{nullptr};
  lora_B = torch::nn::Linear{nullptr};
  alpha_ = 0.0;
  dropout_ = 0.0;
  multiplier_ = 1.0;
}

int64_t LoRALinearImpl::lora_rank() const { return has_lora() ? lora_A->weight.size(0) : 0; }

double LoRALinearImpl::scaling() const {
  return has_lora() ? alpha_ / static_cast<double>(lora_rank()) * multiplier_ : 0.0;
}

void LoRALinearImpl::set_lora_multiplier(double multiplier) {
  CVX_CHECK_AS(ConfigError, std::isfinite(multiplier), "LoRA multiplier must be finite (got ", multiplier, ")");
  CVX_CHECK(!merged_, "cannot change the strength of a merged LoRA adapter: unmerge() first");
  multiplier_ = multiplier;
}

torch::Tensor LoRALinearImpl::delta_weight(double scale) const {
  // At least float32 even for a bf16 weight or bf16 adapter: B @ A sums `rank` products.
  const auto dtype =
      torch::promote_types(torch::promote_types(weight.scalar_type(), lora_A->weight.scalar_type()), torch::kFloat32);
  const auto a = lora_A->weight.detach().to(weight.device(), dtype);  // [r, in]
  const auto b = lora_B->weight.detach().to(weight.device(), dtype);  // [out, r]
  return torch::matmul(b, a).mul_(scale);                             // [out, in]
}

void LoRALinearImpl::merge() {
  if (!has_lora() || merged_) return;
  check_module_unlocked(*this, "merge a LoRA adapter");
  torch::NoGradGuard no_grad;
  const double scale = scaling();
  const auto delta = delta_weight(scale);
  weight.copy_(weight.to(delta.scalar_type()) + delta);
  merged_scaling_ = scale;
  merged_ = true;
}

void LoRALinearImpl::unmerge() {
  if (!merged_) return;
  check_module_unlocked(*this, "unmerge a LoRA adapter");
  torch::NoGradGuard no_grad;
  const auto delta = delta_weight(merged_scaling_);
  weight.copy_(weight.to(delta.scalar_type()) - delta);
  merged_ = false;
  merged_scaling_ = 0.0;
}

void LoRALinearImpl::freeze_base(bool frozen) {
  weight.set_requires_grad(!frozen);
  if (bias.defined()) bias.set_requires_grad(!frozen);
}

void LoRALinearImpl::pretty_print(std::ostream& stream) const {
  stream << "cvx::LoRALinear(in_features=" << in_features_ << ", out_features=" << out_features_
         << ", bias=" << (bias.defined() ? "true" : "false");
  if (has_lora()) {
    stream << ", lora_rank=" << lora_rank() << ", lora_alpha=" << alpha_ << ", scaling=" << scaling();
    if (merged_) stream << ", merged";
  }
  stream << ")";
}

}  // namespace cvx
