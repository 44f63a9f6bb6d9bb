// Activation checkpointing: run a function without keeping its activations and recompute it in
// backward (libtorch has no torch.utils.checkpoint). Gradients reach the function's parameters
// through the recomputed graph, exactly as PyTorch's reentrant checkpoint does.
#pragma once
#include <torch/torch.h>

#include <functional>

namespace cvx {

using CheckpointedFn = std::function<torch::autograd::variable_list(const torch::autograd::variable_list&)>;

// `inputs` are the tensors fn reads that gradients may flow to (undefined entries are not
// allowed); `params` are the parameters fn uses (those requiring grad get their gradients through
// this node, so training works even when no input requires grad, e.g. LoRA on a frozen base).
// Anything else fn needs (constants such as rotary tables) is captured by the closure. The CPU
// random generator state is replayed on recomputation so dropout masks match.
torch::autograd::variable_list checkpoint(CheckpointedFn fn, const torch::autograd::variable_list& inputs,
                                          const torch::autograd::variable_list& params = {});

}  // namespace cvx
