#include "cvx/dist/flat_param.h"

#include <map>

#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"
#include "cvx/core/tensor_storage.h"

namespace cvx {
namespace {

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

torch::Dtype layout_dtype(const std::string& name, const std::string& source) {
  const auto dtype = dtype_from_name(name);
  CVX_CHECK_AS(FormatError, dtype.has_value(), source, ": unknown dtype ", quote(name),
               " (expected fp32, bf16, fp16 or fp64)");
  return *dtype;
}

}  // namespace

std::string FlatLayout::group_name() const {
  return std::string(trainable ? "trainable." : "frozen.") + dtype_name(dtype);
}

FlatLayout make_flat_layout(const std::vector<FlatEntry>& entries, torch::Dtype dtype, bool trainable, int world_size,
                            int64_t alignment) {
  CVX_CHECK(world_size >= 1 && alignment >= 1, "flat layout: world size and alignment must be >= 1");
  FlatLayout layout;
  layout.dtype = dtype;
  layout.trainable = trainable;
  layout.world_size = world_size;
  layout.alignment = alignment;
  int64_t next = 0;
  for (FlatEntry e : entries) {
    e.numel = 1;
    for (const auto d : e.shape) e.numel *= d;
    e.offset = round_up(next, alignment);
    next = e.offset + e.numel;
    layout.numel += e.numel;
    layout.entries.push_back(std::move(e));
  }
  layout.padded_numel = round_up(std::max<int64_t>(next, 1), int64_t{world_size} * alignment);
  return layout;
}

nlohmann::json FlatLayout::to_json() const {
  nlohmann::json out{{"dtype", dtype_name(dtype)},  {"trainable", trainable}, {"world_size", world_size},
                     {"alignment", alignment},      {"numel", numel},         {"padded_numel", padded_numel},
                     {"shard_numel", shard_numel()}};
  out["entries"] = nlohmann::json::array();
  for (const auto& e : entries)
    out["entries"].push_back(
        {{"name", e.name}, {"shape", e.shape}, {"offset", e.offset}, {"numel", e.numel}, {"buffer", e.is_buffer}});
  return out;
}

FlatLayout FlatLayout::from_json(const nlohmann::json& json, const std::string& source) {
  try {
    FlatLayout layout;
    layout.dtype = layout_dtype(json.at("dtype").get<std::string>(), source);
    layout.trainable = json.at("trainable").get<bool>();
    layout.world_size = json.at("world_size").get<int>();
    layout.alignment = json.at("alignment").get<int64_t>();
    layout.numel = json.at("numel").get<int64_t>();
    layout.padded_numel = json.at("padded_numel").get<int64_t>();
    for (const auto& e : json.at("entries")) {
      FlatEntry entry;
      entry.name = e.at("name").get<std::string>();
      entry.shape = e.at("shape").get<std::vector<int64_t>>();
      entry.offset = e.at("offset").get<int64_t>();
      entry.numel = e.at("numel").get<int64_t>();
      entry.is_buffer = e.value("buffer", false);
      CVX_CHECK_AS(FormatError, entry.offset >= 0 && entry.offset + entry.numel <= layout.padded_numel, source,
                   ": entry ", quote(entry.name), " lies outside its flat buffer");
      layout.entries.push_back(std::move(entry));
    }
    CVX_CHECK_AS(FormatError, layout.world_size >= 1 && layout.padded_numel % layout.world_size == 0, source,
                 ": padded_numel ", layout.padded_numel, " is not a multiple of world_size ", layout.world_size);
    return layout;
  } catch (const nlohmann::json::exception& e) {
    CVX_THROW_AS(FormatError, source, ": malformed flat layout (", e.what(), ")");
  }
}

FlatParamUnit::FlatParamUnit(const ShardingUnit& unit, const MixedPrecisionPolicy& policy, int rank, int world_size,
                             bool sharded, int64_t alignment, torch::Device device, bool allocate)
    : name_(unit.name.empty() ? "(root)" : unit.name),
      runner_index_(unit.runner_index),
      rank_(rank),
      world_size_(world_size),
      sharded_(sharded && world_size > 1),
      allocate_(allocate),
      device_(device),
      reduce_dtype_(policy.reduce_dtype) {
  // Groups keyed by (compute dtype, trainable), in order of first appearance.
  std::vector<std::pair<torch::Dtype, bool>> keys;
  std::map<std::pair<int, bool>, std::pair<std::vector<FlatEntry>, std::vector<torch::Tensor>>> members;
  auto add = [&](const std::string& name, const torch::Tensor& t, bool is_buffer) {
    CVX_CHECK(t.defined() && t.is_floating_point(), "sharding unit ", name_, ": tensor ", quote(name),
              " is not a floating-point tensor");
    const auto dtype = policy.param_dtype.value_or(t.scalar_type());
    const bool trainable = !is_buffer && t.requires_grad();
    const std::pair<int, bool> key{static_cast<int>(dtype), trainable};
    if (!members.count(key)) keys.emplace_back(dtype, trainable);
    auto& [entries, tensors] = members[key];
    entries.push_back({name, t.sizes().vec(), 0, 0, is_buffer});
    tensors.push_back(t);
  };
  for (const auto& [name, t] : unit.parameters) add(name, t, false);
  for (const auto& [name, t] : unit.buffers) add(name, t, true);
  for (const auto& [dtype, trainable] : keys) {
    auto& [entries, tensors] = members[{static_cast<int>(dtype), trainable}];
    Group g;
    g.layout = make_flat_layout(entries, dtype, trainable, sharded_ ? world_size : 1, alignment);
    g.tensors = tensors;
    for (const auto& t : tensors) g.from_module.push_back(is_materialized(t));
    if (allocate_) {
      const auto options = torch::TensorOptions().dtype(dtype).device(device_);
      g.shard = torch::zeros({g.layout.shard_numel()}, options);
      if (trainable) {
        g.master =
            dtype == torch::kFloat32 ? g.shard : torch::zeros({g.layout.shard_numel()}, options.dtype(torch::kFloat32));
        g.grad = torch::zeros({g.layout.shard_numel()}, options.dtype(policy.reduce_dtype));
      }
      g.full = sharded_ ? unmaterialized_tensor({g.layout.padded_numel}, options) : g.shard;
    }
    groups_.push_back(std::move(g));
  }
}

bool FlatParamUnit::has_trainable() const {
  for (const auto& g : groups_)
    if (g.layout.trainable) return true;
  return false;
}

std::pair<int64_t, int64_t> FlatParamUnit::shard_range(const Group& g) const {
  const int64_t s = g.layout.shard_numel();
  const int64_t r = sharded_ ? rank_ : 0;
  return {r * s, (r + 1) * s};
}

int64_t FlatParamUnit::write_entry_slice(Group& g, size_t e, const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  const auto& entry = g.layout.entries.at(e);
  CVX_CHECK(values.numel() == entry.numel, "sharding unit ", name_, ": ", quote(entry.name), " has ", values.numel(),
            " values, its layout ", entry.numel);
  const auto [begin, end] = shard_range(g);
  const int64_t lo = std::max(begin, entry.offset), hi = std::min(end, entry.offset + entry.numel);
  if (lo >= hi) return 0;
  const auto part = values.reshape({-1}).narrow(0, lo - entry.offset, hi - lo);
  g.shard.narrow(0, lo - begin, hi - lo).copy_(part);
  // The master takes the values before rounding to the compute dtype (fp32 adapters under bf16).
  if (g.master.defined() && !g.master.is_same(g.shard)) g.master.narrow(0, lo - begin, hi - lo).copy_(part);
  return hi - lo;
}

void FlatParamUnit::flatten() {
  CVX_CHECK(allocate_, "sharding unit ", name_, ": a planning-only unit cannot be flattened");
  torch::NoGradGuard no_grad;
  for (auto& g : groups_) {
    for (size_t e = 0; e < g.tensors.size(); ++e)
      if (g.from_module[e]) write_entry_slice(g, e, g.tensors[e]);
    // The full buffer must exist while the views are created; its bytes go again right after.
    if (sharded_) allocate_storage(g.full, static_cast<size_t>(g.layout.padded_numel) * g.full.element_size());
    for (size_t e = 0; e < g.tensors.size(); ++e) {
      const auto& entry = g.layout.entries[e];
      g.tensors[e].set_data(g.full.narrow(0, entry.offset, entry.numel).view(entry.shape));
    }
    if (sharded_) free_storage(g.full);
  }
  unsharded_ = !sharded_;
}

void FlatParamUnit::unshard_async(Communicator& comm) {
  if (unsharded_ || unshard_in_flight() || !sharded_) return;
  for (auto& g : groups_) {
    allocate_storage(g.full, static_cast<size_t>(g.layout.padded_numel) * g.full.element_size());
    g.gather = comm.all_gather(g.shard, g.full);
  }
}

bool FlatParamUnit::unshard_in_flight() const {
  for (const auto& g : groups_)
    if (g.gather) return true;
  return false;
}

void FlatParamUnit::wait_unshard() {
  if (!sharded_) return;
  CVX_CHECK(unsharded_ || unshard_in_flight(), "sharding unit ", name_, ": wait_unshard() without unshard_async()");
  for (auto& g : groups_) {
    if (!g.gather) continue;
    g.gather->wait();
    g.gather.reset();
  }
  unsharded_ = true;
}

void FlatParamUnit::reshard() {
  if (!sharded_) return;
  for (auto& g : groups_) {
    if (g.gather) {  // a prefetch nobody used: finish it so its buffer can go
      g.gather->wait();
      g.gather.reset();
    }
    free_storage(g.full);
  }
  unsharded_ = false;
}

void FlatParamUnit::refresh_compute_shards() {
  torch::NoGradGuard no_grad;
  for (auto& g : groups_)
    if (g.master.defined() && !g.master.is_same(g.shard)) g.shard.copy_(g.master);
}

void FlatParamUnit::zero_grad() {
  for (auto& g : groups_)
    if (g.grad.defined()) g.grad.zero_();
}

FlatParamUnit::Bytes FlatParamUnit::bytes() const {
  Bytes b;
  for (const auto& g : groups_) {
    const uint64_t shard = static_cast<uint64_t>(g.layout.shard_numel());
    const uint64_t full = static_cast<uint64_t>(g.layout.padded_numel);
    const uint64_t size = c10::elementSize(g.layout.dtype);
    if (!g.layout.trainable) {
      b.frozen_shards += shard * size;
    } else {
      if (g.layout.dtype != torch::kFloat32) b.trainable_shards += shard * size;
      const uint64_t reduce_size = c10::elementSize(reduce_dtype_);
      b.masters += shard * 4;
      b.grads += shard * reduce_size;
      b.full_grad += full * reduce_size;
    }
    if (sharded_) b.full += full * size;
  }
  return b;
}

}  // namespace cvx
