// The per-rank memory report printed at start-up (and by --dry_run for a simulated world): what
// the sharded engine holds, item by item, each with its formula and the formula's inputs, so a
// user can check the figures and see what a larger world or another strategy would change.
//
// ZeRO-3 (sharding = full), bf16 compute, fp32 masters, N ranks, Ψf frozen and Ψt trainable
// elements, U the largest runner unit's and R the persistent units' elements (all padded):
//   frozen shards   2 Ψf / N          trainable compute copies  2 Ψt / N
//   fp32 masters    4 Ψt / N          fp32 gradient shards      4 Ψt / N
//   AdamW moments   8 Ψt / N          persistent units (root)   2 R
//   gathered units  2 x 2 U (the unit computing + the prefetched one; ZeRO-2: all units, 2 Σ U)
//   gradient buffers (pending + 1) x 4 Ut  (full-size fp32 gradients of one unit in flight)
//   + activations (model-specific estimate, given by the caller)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cvx/core/format_bytes.h"
#include "cvx/dist/fsdp_engine.h"

namespace cvx {

struct MemoryLine {
  std::string item, formula;
  uint64_t bytes = 0;
};

// The engine's items as lines (formula with its inputs substituted).
std::vector<MemoryLine> engine_memory_lines(const EngineMemory& memory, const FsdpOptions& options);

// The whole report: a header naming the world, strategy and precision, the engine's lines, the
// caller's `extra` lines (activations), and the total.
std::string format_memory_report(const EngineMemory& memory, const FsdpOptions& options,
                                 const std::vector<MemoryLine>& extra);

}  // namespace cvx
