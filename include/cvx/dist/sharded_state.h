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
#include <optional>

#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/sharded_adamw.h"
#include "cvx/io/safetensors.h"

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

struct FullStateOptions {
  std::optional<torch::Dtype> dtype;  // convert every tensor (unset: as held)
  bool trainable_only = false;
  uint64_t max_shard_bytes = 10ull << 30;  // diffusers' default split
  // The tensors' order, which decides the shard split (diffusers splits in state-dict order: pass
  // the model's module_state names); names not listed follow in layout order.
  std::vector<std::string> order;
  std::map<std::string, std::string> metadata{{"format", "pt"}};
};

// Collective. gather_full_state streamed into `<dir>/<base>.safetensors` (or shards + index, as
// save_safetensors_sharded lays them out, byte for byte) by rank 0 of the first replica: each unit
// is written as it arrives, so neither memory nor the writer ever holds the whole model.
// Returns the files written (on the writing rank; empty elsewhere).
ShardedWriteResult save_full_state(FsdpEngine& engine, const std::filesystem::path& dir, const std::string& base,
                                   const FullStateOptions& options = {});

}  // namespace cvx
