// [parallel]: how training state is spread over the ranks.
#pragma once
#include <cstdint>
#include <string>

#include "cvx/core/error.h"

namespace cvx {

struct ParallelConfig {
  std::string sharding = "full";  // FSDP-style: parameters, gradients and AdamW state sharded
  std::string backend = "auto";   // nccl on CUDA builds, mpi otherwise
  int64_t timeout_s = 1800;
  bool prefetch = true;
  std::string reduce_dtype = "fp32";
  int64_t simulate_world_size = 0;
  int64_t zero_stage = 0;  // 0: `sharding` decides; 2 or 3 override it (DeepSpeed's names)
  int64_t sequence_parallel_size = 1;
  int64_t replicate_size = 0;  // 0: derived (process_grid.h)
  int64_t shard_size = 0;      // 0: derived

  template <class V>
  void visit(V& v) {
    v.choice("sharding", sharding, {"full", "grad_optimizer", "none"},
             "full: shard parameters, gradients and optimizer state (ZeRO-3); grad_optimizer: shard gradients and "
             "optimizer state, keep a block gathered from forward to backward (ZeRO-2); none: replicate (DDP)");
    v.choice("backend", backend, {"auto", "nccl", "mpi"}, "collective backend; auto picks NCCL when built with CUDA");
    v("timeout_s", timeout_s, "seconds a collective may wait before the job is aborted");
    v("prefetch", prefetch, "gather the next block's parameters while the current one computes");
    v.choice("reduce_dtype", reduce_dtype, {"fp32", "bf16"}, "dtype gradients are reduced and accumulated in");
    v("simulate_world_size", simulate_world_size,
      "with --dry_run: plan (and print the per-rank memory of) a world of this many ranks; 0 = the real one");
    v("zero_stage", zero_stage, "DeepSpeed's name for the sharding: 3 = full, 2 = grad_optimizer (0: use sharding)");
    v("sequence_parallel_size", sequence_parallel_size,
      "ranks that split the tokens of each sample (Ulysses: consecutive ranks, H / P heads each around attention); "
      "must divide the world size and the attention heads; the data-parallel world is world / P");
    v("shard_size", shard_size,
      "data-parallel ranks of one replica that shard the model (world = replicate x shard x sequence; the "
      "engine shards over shard x sequence ranks); 0: world / (replicate_size x sequence_parallel_size)");
    v("replicate_size", replicate_size,
      "replicas of the sharded model (hybrid sharding: shard within a node, replicate across nodes; gradients "
      "averaged across replicas); 0: world / (shard_size x sequence_parallel_size) when shard_size is given, else 1");
  }
  // `sharding` after zero_stage is applied.
  std::string resolved_sharding() const {
    return zero_stage == 3 ? "full" : zero_stage == 2 ? "grad_optimizer" : sharding;
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, timeout_s > 0, "timeout_s must be > 0 (got ", timeout_s, ")");
    CVX_CHECK_AS(ConfigError, zero_stage == 0 || zero_stage == 2 || zero_stage == 3,
                 "zero_stage must be 2 or 3 (or 0 to use sharding), got ", zero_stage,
                 "; stage 1 shards only optimizer state, which sharding = grad_optimizer already exceeds");
    CVX_CHECK_AS(ConfigError, sequence_parallel_size >= 1, "sequence_parallel_size must be >= 1 (got ",
                 sequence_parallel_size, ")");
    CVX_CHECK_AS(ConfigError, replicate_size >= 0 && shard_size >= 0, "replicate_size and shard_size must be >= 0 ",
                 "(0: derived), got ", replicate_size, " and ", shard_size);
    CVX_CHECK_AS(ConfigError, simulate_world_size >= 0, "simulate_world_size must be >= 0 (got ", simulate_world_size,
                 ")");
  }
};

}  // namespace cvx
