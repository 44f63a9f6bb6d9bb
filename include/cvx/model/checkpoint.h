// Activation checkpointing: run a function without keeping its activations and recompute it in
// backward (libtorch has no torch.utils.checkpoint). Gradients reach the function's parameters
// through the recomputed graph, exactly as PyTorch's reentrant checkpoint does.
#pragma once
#include <torch/torch.h>

#include <functional>

namespace cvx {

using CheckpointedFn = std::function<torch::autograd::variable_list(const torch::autograd::variable_list&)>;

// `inputs` are the tensors gradients must flow to (undefined entries are not allowed); anything
// else fn needs (constants such as rotary tables) is captured by the closure. The CPU random
// generator state is replayed on recomputation so dropout masks match.
torch::autograd::variable_list checkpoint(CheckpointedFn fn, const torch::autograd::variable_list& inputs);

}  // namespace cvx
