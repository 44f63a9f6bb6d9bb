// The seam between a model and the sharding engine, in plain types so that neither includes the
// other: the model lists its units (named parameters and buffers, with qualified names equal to
// the checkpoint keys) and runs each repeated unit through a UnitRunner it is given; the engine
// shards whatever units it is handed and installs a runner that gathers, runs and frees them.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace cvx {

using NamedTensorList = std::vector<std::pair<std::string, torch::Tensor>>;

// One unit's computation: tensors in, tensors out (a transformer block: hidden, encoder, temb ->
// hidden, encoder). Anything else it needs is captured.
using UnitFn = std::function<torch::autograd::variable_list(const torch::autograd::variable_list&)>;
// Runs unit `index` on `inputs`. The model calls it on the gradient and the no-gradient path
// alike; the model's own default runs fn directly (or checkpointed, when it recomputes).
using UnitRunner = std::function<torch::autograd::variable_list(int64_t index, const UnitFn& fn,
                                                                const torch::autograd::variable_list& inputs)>;

struct ShardingUnit {
  std::string name;            // "transformer_blocks.3"; "" for the root unit
  NamedTensorList parameters;  // qualified names ("transformer_blocks.3.attn1.to_q.weight")
  NamedTensorList buffers;     // persistent buffers (never trained)
  // >= 0: the unit runs through the UnitRunner with this index, once per forward, in index order.
  // -1: the root — its tensors are used outside the runner, before and after the runner's units.
  int64_t runner_index = -1;
  // The module the tensors belong to: an engine holding them locks its structure
  // (core/module_lock.h) for as long as it exists. Optional.
  const torch::nn::Module* module = nullptr;
};

}  // namespace cvx
