// How a model is constructed: parameters in an explicit dtype on an explicit device (no
// process-wide default dtype), either initialised as the reference initialises them or left
// unmaterialised — shaped, without storage or values — for a loader (load_state) or the sharding
// engine to fill, so a 5B model can be built on every rank without 11 GB per rank.
#pragma once
#include <torch/torch.h>

namespace cvx {

struct ModuleInit {
  torch::Dtype dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  bool materialize = true;  // false: shapes only (see core/tensor_storage.h)

  torch::TensorOptions options() const { return torch::TensorOptions().dtype(dtype).device(device); }
  static ModuleInit unmaterialized(torch::Dtype dtype, torch::Device device = torch::kCPU) {
    return {dtype, device, false};
  }
};

// A parameter's tensor: torch::empty for the caller to initialise, or an unmaterialised one.
torch::Tensor new_parameter(at::IntArrayRef shape, const ModuleInit& init);

// torch::nn's built-in modules (LayerNorm, Conv2d, GroupNorm, ...) always initialise themselves in
// float32 on the CPU; this moves the fresh module's tensors to init's dtype and device, or
// replaces them with unmaterialised ones. Cheap for the small modules it is used on.
void apply_init(torch::nn::Module& module, const ModuleInit& init);
template <class Holder>
Holder adopt(Holder module, const ModuleInit& init) {
  apply_init(*module, init);
  return module;
}

}  // namespace cvx
