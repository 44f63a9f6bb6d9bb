// Flat parameters: one unit's tensors packed into one contiguous buffer per (dtype, trainable)
// group, each rank owning one contiguous shard of it.
//
// Layout (deterministic from the unit's tensor order, identical on every rank, recorded in
// layout.json so a checkpoint can be resharded): entries at offsets aligned to `alignment`
// elements, the whole padded to a multiple of world_size x alignment; rank r owns elements
// [r S, (r + 1) S) with S = padded / world_size. The padding is zero and stays zero (it gets zero
// gradients), so norms and optimizer steps over shards equal those over the unpadded tensors.
//
// Storage per group: `shard` (compute dtype, this rank's slice, persistent); for trainable groups
// `master` (fp32, aliases shard when the compute dtype is fp32) and `grad` (fp32, accumulated
// reduce-scattered gradients); `full` (padded buffer in the compute dtype) whose bytes exist only
// while the unit is unsharded. The module's tensors are re-pointed (set_data) to views of `full`
// once, at flatten time; unsharding regrows full's storage and all-gathers into it, resharding
// drops the bytes again, and the views follow because they share full's storage.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cvx/core/sharding_unit.h"
#include "cvx/dist/communicator.h"

namespace cvx {

struct FlatEntry {
  std::string name;  // the tensor's qualified name (checkpoint key)
  std::vector<int64_t> shape;
  int64_t offset = 0;  // elements from the start of the flat buffer
  int64_t numel = 0;
  bool is_buffer = false;  // a module buffer (never trained)
};

struct FlatLayout {
  torch::Dtype dtype = torch::kFloat32;  // of shard and full
  bool trainable = false;
  int world_size = 1;
  int64_t alignment = 1;
  std::vector<FlatEntry> entries;
  int64_t numel = 0;         // sum of the entries' element counts (payload)
  int64_t padded_numel = 0;  // the flat buffer: a multiple of world_size x alignment
  int64_t shard_numel() const { return padded_numel / world_size; }
  // "trainable.bf16" / "frozen.fp32": how the group is named in reports and state files.
  std::string group_name() const;
  nlohmann::json to_json() const;
  static FlatLayout from_json(const nlohmann::json& json, const std::string& source);
};

// Entries at aligned offsets, in the given order; padded as described above.
FlatLayout make_flat_layout(const std::vector<FlatEntry>& entries, torch::Dtype dtype, bool trainable, int world_size,
                            int64_t alignment);

// Mixed precision: tensors are computed in param_dtype (unset: each keeps its own dtype),
// gradients reduced in reduce_dtype, trainable parameters kept as fp32 masters.
struct MixedPrecisionPolicy {
  std::optional<torch::Dtype> param_dtype;
  torch::Dtype reduce_dtype = torch::kFloat32;
};

class FlatParamUnit {
 public:
  struct Group {
    FlatLayout layout;
    std::vector<torch::Tensor> tensors;  // the module's tensors, aligned with layout.entries
    std::vector<bool> from_module;       // entry had values at flatten time (else to be loaded)
    torch::Tensor shard, master, grad, full;
    WorkPtr gather;  // an all-gather into full in flight
  };

  // Plans the unit's groups for `world_size` ranks. `sharded` = false replicates (world_size 1
  // layouts; shard == full, never freed). With allocate = false only the layouts exist (memory
  // planning for a world that is not there); the tensors are left untouched.
  FlatParamUnit(const ShardingUnit& unit, const MixedPrecisionPolicy& policy, int rank, int world_size, bool sharded,
                int64_t alignment, torch::Device device, bool allocate);

  const std::string& name() const { return name_; }
  int64_t runner_index() const { return runner_index_; }
  std::vector<Group>& groups() { return groups_; }
  const std::vector<Group>& groups() const { return groups_; }
  bool has_trainable() const;
  // This rank's element range [begin, end) of a group's flat buffer.
  std::pair<int64_t, int64_t> shard_range(const Group& g) const;
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool sharded() const { return sharded_; }

  // Copies the values the module's materialised tensors hold into the shards (and masters), then
  // points the module's tensors at views of `full` and drops full's bytes (the unit is sharded).
  // Entries whose tensors were unmaterialised are zero until a loader writes their slices.
  void flatten();
  // Writes the part of entry `e`'s values (the whole tensor, any dtype; e.g. a view of a mapped
  // file) that falls into this rank's shard into the shard (and master), converting only that
  // part. Returns the number of elements written.
  int64_t write_entry_slice(Group& g, size_t e, const torch::Tensor& whole_entry_values);

  // All-gathers every group into full (asynchronously: finish with wait_unshard()).
  void unshard_async(Communicator& comm);
  void wait_unshard();
  void reshard();
  bool unsharded() const { return unsharded_; }
  bool unshard_in_flight() const;

  // Copies master -> shard where they are distinct tensors (after an optimizer step).
  void refresh_compute_shards();
  void zero_grad();

  // Bytes of this rank's persistent storage by kind, and of the unsharded unit.
  struct Bytes {
    uint64_t frozen_shards = 0, trainable_shards = 0, masters = 0, grads = 0, full = 0, full_grad = 0;
  };
  Bytes bytes() const;

 private:
  std::string name_;
  int64_t runner_index_;
  int rank_, world_size_;
  bool sharded_, allocate_;
  torch::Device device_;
  torch::Dtype reduce_dtype_;
  std::vector<Group> groups_;
  bool unsharded_ = false;
};

}  // namespace cvx
