// Activation checkpointing as one autograd node (libtorch has no torch.utils.checkpoint), and the
// hooks that let the sharding engine run a whole unit inside that node: gather -> run -> free in
// forward; gather -> recompute -> gradients -> reduce-scatter -> free in backward.
//
// The node's backward differentiates the unit with torch::autograd::grad (gradients go back
// through this node, not accumulated inside it), so parameter gradients are delivered once: to
// the usual accumulators, or to a hook that takes them instead. Random draws (dropout) are
// replayed on recomputation: the CPU generator, and the CUDA generator of the inputs' device.
#pragma once
#include <torch/torch.h>

#include <functional>

#include "cvx/core/sharding_unit.h"

namespace cvx {

struct RecomputeHooks {
  std::function<void()> before_forward;   // e.g. gather the unit's parameters
  std::function<void()> after_forward;    // e.g. free them again
  std::function<void()> before_backward;  // e.g. gather them for the recomputation
  // When set, receives the gradients of `params` (aligned with it; undefined where a parameter got
  // none) instead of autograd; the parameters are then not inputs of the node.
  std::function<void(const torch::autograd::variable_list& param_grads)> on_param_grads;
  std::function<void()> after_backward;  // e.g. free the parameters
};

// `inputs`: the tensors fn reads that gradients may flow to (all defined); `params`: the
// parameters fn uses. keep_activations = false recomputes fn in backward (activation
// checkpointing: only the inputs are kept); true keeps fn's graph from the forward (parameters
// freed by after_forward must be restored, in the same storage, by before_backward).
torch::autograd::variable_list run_recomputed(UnitFn fn, const torch::autograd::variable_list& inputs,
                                              const torch::autograd::variable_list& params, RecomputeHooks hooks = {},
                                              bool keep_activations = false);

// Plain activation checkpointing: run_recomputed without hooks.
inline torch::autograd::variable_list checkpoint(UnitFn fn, const torch::autograd::variable_list& inputs,
                                                 const torch::autograd::variable_list& params = {}) {
  return run_recomputed(std::move(fn), inputs, params);
}

// The generator states recomputation must replay: the CPU generator and, for a CUDA device, that
// device's default generator.
struct RngSnapshot {
  static RngSnapshot capture(const torch::Device& device);
  // Sets the captured states; returns the states it replaced (to put back afterwards).
  RngSnapshot replay() const;
  torch::Device device = torch::kCPU;
  torch::Tensor cpu_state, device_state;
};

}  // namespace cvx
