// A Linear layer that can carry one LoRA adapter, following PEFT's `lora.Linear` (the layer
// diffusers wraps around every targeted nn.Linear of the CogVideoX transformer).
//
// The transformer builds every linear layer as a LoRALinear, so the parameter names are those of
// nn.Linear ("weight", "bias") and a base checkpoint loads unchanged. An adapter adds the
// submodules "lora_A" and "lora_B", whose parameters ("<layer>.lora_A.weight",
// "<layer>.lora_B.weight") are named exactly as in PEFT / diffusers LoRA files.
//
//   y = x W^T + b + scaling * lora_B(lora_A(dropout(x))),   scaling = alpha / rank * multiplier
//
// Mixed precision as PEFT does it: the adapter may be kept in float32 (trainable masters) while the
// base weight and the activations are bf16; x is cast to the adapter's dtype, and the sum (computed
// in the promoted dtype) is cast back to the base output's dtype.
#pragma once
#include <torch/torch.h>

#include <cstdint>

#include "cvx/model/module_init.h"

namespace cvx {

class LoRALinearImpl : public torch::nn::Module {
 public:
  // weight [out, in] and bias [out] in init's dtype and device, initialised like nn.Linear
  // (kaiming_uniform a=sqrt(5), bias U(-1/sqrt(in), 1/sqrt(in))) or left unmaterialised. Without
  // bias no "bias" parameter is registered.
  LoRALinearImpl(int64_t in_features, int64_t out_features, bool with_bias = true, const ModuleInit& init = {});

  // x [..., in] -> [..., out] in the dtype of linear(x, weight, bias).
  torch::Tensor forward(const torch::Tensor& x);

  // Adds (or replaces) the adapter: lora_A = Linear(in -> rank, no bias, kaiming_uniform a=sqrt(5)),
  // lora_B = Linear(rank -> out, no bias, zeros), so a fresh adapter leaves the output unchanged.
  // Created on the base weight's device in `dtype` (float32 masters by default, also for a bf16
  // base). The multiplier is reset to 1. Refused while merged, and while the model's structure is
  // locked (flattened by the sharding engine; so are disable_lora, merge and unmerge). With
  // materialize = false the adapter gets its shapes only (planning a model that is never built).
  void enable_lora(int64_t rank, double alpha, double dropout = 0.0, torch::Dtype dtype = torch::kFloat32,
                   bool materialize = true);
  // Removes the adapter; a merged adapter is unmerged first, so the layer is the plain base again.
  void disable_lora();
  bool has_lora() const { return !lora_A.is_empty(); }
  int64_t lora_rank() const;  // 0 without adapter
  double lora_alpha() const { return alpha_; }
  double lora_dropout() const { return dropout_; }
  double lora_multiplier() const { return multiplier_; }
  double scaling() const;  // alpha / rank * multiplier (0 without adapter)
  // Runtime strength, like diffusers' set_adapters weight or attention_kwargs={"scale": m}.
  // Refused while merged (the merged delta was computed with the old value).
  void set_lora_multiplier(double multiplier);

  // W += scaling * B @ A, computed in at least float32 and rounded to W's dtype; forward then skips
  // the adapter. unmerge() subtracts the same delta: exact up to one rounding of W (float32: ~1 ulp;
  // a bf16 W does not come back bit-exactly, as in PEFT). A/B do not get gradients while merged.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }

  // requires_grad of the base weight and bias: false freezes them (LoRA training).
  void freeze_base(bool frozen = true);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  void reset_parameters();  // the nn.Linear init of weight and bias
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor weight;               // [out, in]
  torch::Tensor bias;                 // [out], undefined without bias
  torch::nn::Linear lora_A{nullptr};  // weight [rank, in]
  torch::nn::Linear lora_B{nullptr};  // weight [out, rank]

 private:
  // scaling * B @ A in the merge dtype. [out, in]
  torch::Tensor delta_weight(double scale) const;

  int64_t in_features_;
  int64_t out_features_;
  double alpha_ = 0.0;
  double dropout_ = 0.0;
  double multiplier_ = 1.0;
  bool merged_ = false;
  double merged_scaling_ = 0.0;  // the scaling folded into weight by merge()
};

TORCH_MODULE(LoRALinear);

}  // namespace cvx
