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

  template <class V>
  void visit(V& v) {
    v.choice("sharding", sharding, {"full", "grad_optimizer", "none"},
             "full: shard parameters, gradients and optimizer state (ZeRO-3); grad_optimizer: shard gradients and "
             "optimizer state (ZeRO-2); none: replicate (DDP)");
    v.choice("backend", backend, {"auto", "nccl", "mpi"}, "collective backend; auto picks NCCL when built with CUDA");
    v("timeout_s", timeout_s, "seconds a collective may wait before the job is aborted");
  }
  void validate() const { CVX_CHECK_AS(ConfigError, timeout_s > 0, "timeout_s must be > 0 (got ", timeout_s, ")"); }
};

}  // namespace cvx
