// The sharded training engine (ZeRO-3 / FSDP semantics; ZeRO-2 and replication as options), for
// any model that lists its units (core/sharding_unit.h). It includes nothing of the model.
//
// Units: every ShardingUnit becomes a FlatParamUnit (flat_param.h). Units with a runner index
// (the transformer blocks) run through runner(): each is one autograd node (core/recompute.h)
// that in forward gathers the unit, prefetches the next one, runs it and frees it again (ZeRO-3;
// ZeRO-2 keeps it until backward), and in backward gathers it, prefetches the previous one,
// recomputes it (activation checkpointing; or differentiates the kept graph when recompute is
// off), reduce-scatters its gradients as soon as they exist and frees it. Units without a runner
// index (the root: embeddings, final norms, proj_out) are persistent: gathered once and kept, as
// DeepSpeed keeps small parameters; their gradients are reduce-scattered by finish_backward().
// Frozen tensors are gathered but get no gradients and no reductions.
//
// Precision: tensors are computed in precision.param_dtype; gradients are reduced in
// precision.reduce_dtype (fp32) and accumulated sharded over micro-steps (reduce-scatter every
// micro-step, so no rank ever holds a full-size gradient of more than one unit); trainable
// parameters have fp32 master shards that the optimizer updates; frozen ones only their
// compute-dtype shards.
//
// Lifetime: the engine must outlive every graph built through its runner. While it exists, the
// units' modules are locked (core/module_lock.h): adapter changes, merges and load_state on the
// model are refused, since they would detach parameters from the engine's buffers.
#pragma once
#include <torch/torch.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cvx/core/sharding_unit.h"
#include "cvx/dist/communicator.h"
#include "cvx/dist/flat_param.h"
#include "cvx/io/safetensors.h"

namespace cvx {

enum class ShardingStrategy {
  full,            // ZeRO-3: parameters, gradients and optimizer state sharded
  grad_optimizer,  // ZeRO-2: gradients and optimizer state sharded; a unit stays gathered from forward to backward
  none,            // replicated (DDP): gradients all-reduced
};
// "full", "grad_optimizer", "none"; throws ConfigError otherwise.
ShardingStrategy parse_sharding_strategy(const std::string& name);
const char* sharding_strategy_name(ShardingStrategy strategy);

struct FsdpOptions {
  ShardingStrategy strategy = ShardingStrategy::full;
  MixedPrecisionPolicy precision;
  bool recompute = true;           // recompute runner units in backward (activation checkpointing)
  bool prefetch = true;            // gather the next unit while the current one computes
  int64_t alignment = 64;          // elements; every tensor starts at such an offset
  int max_pending_reductions = 2;  // gradient reductions in flight before the oldest is completed
  bool allocate = true;            // false: plan the layouts only (memory report for a simulated world)
};

// Per-rank bytes, from the layouts (what the engine holds, not what the allocator reports).
struct EngineMemory {
  int world_size = 1;
  ShardingStrategy strategy = ShardingStrategy::full;
  int64_t num_frozen = 0, num_trainable = 0;  // parameters + buffers, unpadded
  // The formula's inputs: padded element counts (full buffers) and element sizes.
  int64_t frozen_padded = 0, trainable_padded = 0;
  int64_t persistent_padded = 0, largest_unit_padded = 0, largest_unit_trainable_padded = 0, runner_units_padded = 0;
  int compute_bytes = 2, reduce_bytes = 4;
  std::string compute_dtype = "bf16", reduce_dtype = "fp32";
  uint64_t frozen_shards = 0;      // compute-dtype shards of frozen tensors
  uint64_t trainable_shards = 0;   // compute-dtype copies of trainable shards (0 when fp32: the master is used)
  uint64_t masters = 0;            // fp32 master shards
  uint64_t grads = 0;              // reduce-dtype gradient shards
  uint64_t optimizer = 0;          // AdamW exp_avg + exp_avg_sq (2 x fp32 per master element)
  uint64_t persistent_full = 0;    // the persistent (root) units, gathered
  uint64_t largest_unit_full = 0;  // the largest runner unit, gathered
  std::string largest_unit;
  uint64_t unsharded_peak = 0;    // runner units gathered at once: 2 x largest (ZeRO-3 with prefetch), all (ZeRO-2)
  uint64_t gradient_buffers = 0;  // full-size gradient buffers of reductions in flight
  uint64_t total() const {
    return frozen_shards + trainable_shards + masters + grads + optimizer + persistent_full + unsharded_peak +
           gradient_buffers;
  }
};

struct ShardLoadReport {
  size_t num_loaded = 0;    // tensors this rank read a slice of
  uint64_t bytes_read = 0;  // bytes of those slices
  std::vector<std::string> missing, mismatched, unexpected;
};

class FsdpEngine {
 public:
  // Flattens the units over `shard_group` (every rank must pass the same units in the same order).
  // Materialised tensors give their values now; unmaterialised ones are filled by load() or
  // initialize(). `replicate_group` (optional) averages gradients across replicas of the shard
  // group (hybrid sharding: shard within a node, replicate across nodes).
  FsdpEngine(std::vector<ShardingUnit> units, Communicator& shard_group, const FsdpOptions& options,
             torch::Device device, Communicator* replicate_group = nullptr);
  ~FsdpEngine();
  FsdpEngine(const FsdpEngine&) = delete;
  FsdpEngine& operator=(const FsdpEngine&) = delete;

  // Fills the unmaterialised tensors from `source` (key = prefix + name), each rank reading only
  // the slices of its shards (mmap; the full tensor never exists). Strict: throws FormatError
  // naming the source and listing missing, shape-mismatched and unexpected keys.
  ShardLoadReport load(const TensorSource& source, const std::string& prefix = "");
  // Fills the unmaterialised tensors with init(name, values): one tensor materialised at a time
  // (benchmarks with random weights), identical on every rank for the same init.
  void initialize(const std::function<void(const std::string& name, torch::Tensor& values)>& init);

  // The runner to install in the model (set_block_runner).
  UnitRunner runner();

  // Must follow every backward pass: reduces the persistent units' gradients, completes every
  // reduction in flight and reshards any unit still gathered. backward() = loss.backward() + this.
  void finish_backward();
  void backward(const torch::Tensor& loss);

  // ---- optimizer side
  struct TrainableShard {
    std::string id;  // "<unit>/<group>", e.g. "transformer_blocks.3/trainable.bf16"
    torch::Tensor master, grad;
  };
  std::vector<TrainableShard> trainable_shards();
  void zero_grad();
  // The global L2 norm of all gradients (one all-reduce of the shards' squared sums).
  double grad_norm();
  // torch's clip_grad_norm_: scales every gradient by min(1, max_norm / (norm + 1e-6)) when
  // max_norm > 0. Returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  // After the optimizer updated the masters: compute-dtype shards follow, persistent units are
  // gathered again.
  void after_optimizer_step();

  // ---- introspection
  std::vector<FlatParamUnit>& units() { return units_; }
  const std::vector<FlatParamUnit>& units() const { return units_; }
  const FsdpOptions& options() const { return options_; }
  Communicator& shard_group() { return shard_group_; }
  Communicator* replicate_group() { return replicate_group_; }
  bool sharded() const;
  // Runner units whose parameters are gathered right now (or being gathered).
  int num_unsharded_runner_units() const;
  EngineMemory memory() const;
  // Units, their groups' layouts, the world size and the strategy (what layout.json holds).
  nlohmann::json layout_json() const;

 private:
  struct PendingReduction {
    WorkPtr work;
    torch::Tensor full_grad, out, target;  // target += out once done
  };
  FlatParamUnit& runner_unit(int64_t index);
  void ensure_unsharded(FlatParamUnit& unit);
  void prefetch(int64_t runner_index);
  torch::autograd::variable_list run_unit(int64_t index, const UnitFn& fn,
                                          const torch::autograd::variable_list& inputs);
  // Reduces one trainable group's gradients (aligned with its tensors; undefined = zero).
  void reduce_group(FlatParamUnit::Group& group, const std::vector<torch::Tensor>& grads);
  void complete_oldest_reduction();
  void gather_persistent_units();
  std::vector<torch::Tensor> trainable_tensors(const FlatParamUnit& unit) const;
  void check_allocated(const char* what) const;

  std::vector<const torch::nn::Module*> locked_;
  std::vector<FlatParamUnit> units_;
  std::vector<size_t> by_runner_index_;                        // runner index -> position in units_
  std::vector<std::vector<torch::Tensor>> trainable_tensors_;  // per unit, the tensors given to the node
  Communicator& shard_group_;
  Communicator* replicate_group_;
  FsdpOptions options_;
  torch::Device device_;
  std::deque<PendingReduction> pending_;
  bool backward_unfinished_ = false;  // a unit ran its backward since the last finish_backward()
};

}  // namespace cvx
