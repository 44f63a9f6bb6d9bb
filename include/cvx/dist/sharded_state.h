// Sharded training state on disk, resumable with another world size.
//
//   DIR/layout.json                     {"format": "cvx-sharded-state", "version": 1, "world_size": N,
//                                        "strategy", "alignment", "optimizer_step", "extra": {...},
//                                        "units": [{"name", "runner_index", "groups": [flat layouts]}]}
//   DIR/shard-{r:05d}-of-{N:05d}.safetensors   rank r's slice of every trainable group:
//                                        "<unit>/<group>/master", ".../exp_avg", ".../exp_avg_sq" (fp32)
// Frozen tensors are not saved: they come from the base model. The folder is assembled under a
// temporary name and renamed into place by rank 0 after every rank's file is on disk, so a
// checkpoint either exists whole or not at all (an older one at the same path is replaced whole).
//
// Loading on M ranks maps every tensor of the new layout, by name, onto the saved layout and
// reads the element ranges of its new shard from whichever old shard files hold them (mmap), so
// N -> M resharding needs no conversion step and no rank reads more than its share.
#pragma once
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/sharded_adamw.h"

namespace cvx {

// Collective over the engine's shard group (and replicas: only replica 0 writes). `extra` is
// stored verbatim (the trainer's step, sampler position, LR state, RNG states).
void save_sharded_state(const std::filesystem::path& dir, FsdpEngine& engine, const ShardedAdamW* optimizer,
                        const nlohmann::json& extra = {});

// Collective. Restores masters (then compute shards and persistent units) and, when given, the
// optimizer's moments and step count. Throws FormatError naming the folder and the tensor when the
// saved layout does not hold a trainable tensor of this engine or holds it with another shape.
// Returns the saved `extra`.
nlohmann::json load_sharded_state(const std::filesystem::path& dir, FsdpEngine& engine, ShardedAdamW* optimizer);

// Collective. The full value of every tensor (trainable: fp32 masters; frozen: compute-dtype
// values unless trainable_only), unit by unit: each unit is gathered, handed to `sink` on rank 0
// of the shard group tensor by tensor (names = checkpoint keys), and freed before the next, so
// no rank ever holds more than one unit in full.
void gather_full_state(FsdpEngine& engine,
                       const std::function<void(const std::string& name, const torch::Tensor& value)>& sink,
                       bool trainable_only = false);

}  // namespace cvx
