#include "cvx/dist/sharded_state.h"

#include <cstdio>
#include <map>

#include "cvx/core/error.h"
#include "cvx/core/shape.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/json_file.h"
#include "cvx/io/safetensors.h"
#include "cvx/io/safetensors_stream_writer.h"

namespace cvx {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "cvx-sharded-state";
constexpr int kVersion = 1;

std::string shard_file_name(int rank, int world_size) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.safetensors", rank, world_size);
  return name;
}

std::string group_id(const FlatParamUnit& unit, const FlatParamUnit::Group& g) {
  return unit.name() + "/" + g.layout.group_name();
}

// The optimizer's moments by group id (its params are the engine's trainable shards, in order).
std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> moments(const ShardedAdamW* optimizer) {
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> out;
  if (optimizer == nullptr) return out;
  for (size_t i = 0; i < optimizer->params().size(); ++i)
    out[optimizer->params()[i].id] = {optimizer->exp_avg()[i], optimizer->exp_avg_sq()[i]};
  return out;
}

void barrier(FsdpEngine& engine) {
  engine.shard_group().barrier();
  if (engine.replicate_group() != nullptr) engine.replicate_group()->barrier();
}

}  // namespace

void save_sharded_state(const fs::path& dir, FsdpEngine& engine, const ShardedAdamW* optimizer,
                        const nlohmann::json& extra) {
  Communicator& group = engine.shard_group();
  // Replicas hold the same shards; replica 0 writes them.
  const bool writer = engine.replicate_group() == nullptr || engine.replicate_group()->rank() == 0;
  const bool leader = writer && group.rank() == 0;
  // One name every rank agrees on (temp_path_for is per process).
  const fs::path staging = dir.parent_path() / ("." + dir.filename().string() + ".partial");
  if (leader) {
    std::error_code ec;
    fs::remove_all(staging, ec);  // a save that died half-way
    fs::create_directories(staging, ec);
    CVX_CHECK_AS(SystemError, !ec, "cannot create checkpoint folder ", staging.string(), ": ", ec.message());
  }
  barrier(engine);
  const auto optimizer_moments = moments(optimizer);
  if (writer) {
    NamedTensors tensors;
    for (const auto& unit : engine.units())
      for (const auto& g : unit.groups()) {
        if (!g.layout.trainable) continue;
        const std::string id = group_id(unit, g);
        tensors.emplace_back(id + "/master", g.master);
        if (const auto it = optimizer_moments.find(id); it != optimizer_moments.end()) {
          tensors.emplace_back(id + "/exp_avg", it->second.first);
          tensors.emplace_back(id + "/exp_avg_sq", it->second.second);
        }
      }
    save_safetensors(staging / shard_file_name(group.rank(), group.size()), tensors, {{"format", kFormat}});
  }
  barrier(engine);
  if (leader) {
    nlohmann::json layout = engine.layout_json();
    layout["format"] = kFormat;
    layout["version"] = kVersion;
    layout["optimizer_step"] = optimizer ? optimizer->step_count() : 0;
    layout["has_optimizer"] = optimizer != nullptr;
    layout["extra"] = extra;
    write_json_file(staging / "layout.json", layout);
    replace_directory(staging, dir);
  }
  barrier(engine);
}

namespace {

struct SavedGroup {
  FlatLayout layout;
  std::map<std::string, size_t> entry_index;
};

// Copies old flat elements [old_begin, old_begin + n) of `tensor_name` (spread over the old
// ranks' files, S_old elements each) into `dst`.
class OldShards {
 public:
  OldShards(fs::path dir, int world_size) : dir_(std::move(dir)), world_size_(world_size) {}
  void copy(const std::string& tensor_name, int64_t old_shard_numel, int64_t old_begin, const torch::Tensor& dst) {
    int64_t done = 0;
    const int64_t n = dst.numel();
    while (done < n) {
      const int64_t pos = old_begin + done;
      const int rank = static_cast<int>(pos / old_shard_numel);
      const int64_t local = pos - rank * old_shard_numel;
      const int64_t take = std::min(n - done, old_shard_numel - local);
      const auto& file = open(rank);
      CVX_CHECK_AS(FormatError, file.contains(tensor_name), file.description(), " has no tensor ", quote(tensor_name),
                   " (the checkpoint is incomplete or from another run)");
      const auto src = file.tensor(tensor_name);
      CVX_CHECK_AS(FormatError, src.dim() == 1 && src.numel() == old_shard_numel, file.description(), ": ",
                   quote(tensor_name), " has shape ", shape_string(src.sizes()), ", its layout says [", old_shard_numel,
                   "]");
      dst.narrow(0, done, take).copy_(src.narrow(0, local, take));
      done += take;
    }
  }

 private:
  const SafetensorsFile& open(int rank) {
    CVX_CHECK_AS(FormatError, rank >= 0 && rank < world_size_, dir_.string(), ": element beyond the saved shards");
    auto& slot = files_[rank];
    if (!slot) {
      const fs::path path = dir_ / shard_file_name(rank, world_size_);
      CVX_CHECK_AS(FormatError, fs::exists(path), "checkpoint ", dir_.string(), " lacks ", path.filename().string(),
                   " (saved on ", world_size_, " ranks; every shard file must be present)");
      slot = SafetensorsFile::open(path);
    }
    return *slot;
  }
  fs::path dir_;
  int world_size_;
  std::map<int, std::shared_ptr<SafetensorsFile>> files_;
};

}  // namespace

nlohmann::json load_sharded_state(const fs::path& dir, FsdpEngine& engine, ShardedAdamW* optimizer) {
  const fs::path layout_file = dir / "layout.json";
  CVX_CHECK_AS(ConfigError, fs::exists(layout_file), "checkpoint ", dir.string(), " has no layout.json (not a cvx ",
               "sharded checkpoint, or one whose save did not finish)");
  const nlohmann::json layout = read_json_file(layout_file);
  const std::string source = layout_file.string();
  CVX_CHECK_AS(FormatError, layout.value("format", "") == kFormat && layout.value("version", 0) == kVersion, source,
               ": not a ", kFormat, " version ", kVersion, " file");
  const int old_world = layout.at("world_size").get<int>();
  std::map<std::string, SavedGroup> saved;  // by group id
  for (const auto& u : layout.at("units")) {
    const std::string unit_name = u.at("name").get<std::string>();
    for (const auto& g : u.at("groups")) {
      SavedGroup s;
      s.layout = FlatLayout::from_json(g, source);
      for (size_t e = 0; e < s.layout.entries.size(); ++e) s.entry_index[s.layout.entries[e].name] = e;
      saved[unit_name + "/" + s.layout.group_name()] = std::move(s);
    }
  }
  const bool with_optimizer = optimizer != nullptr && layout.value("has_optimizer", false);
  CVX_CHECK_AS(FormatError, optimizer == nullptr || with_optimizer, source,
               ": this checkpoint holds no optimizer state; load it without an optimizer (weights only)");
  const auto optimizer_moments = moments(optimizer);
  OldShards old(dir, old_world);
  torch::NoGradGuard no_grad;
  for (auto& unit : engine.units()) {
    for (auto& g : unit.groups()) {
      if (!g.layout.trainable) continue;
      const std::string id = group_id(unit, g);
      const auto it = saved.find(id);
      CVX_CHECK_AS(FormatError, it != saved.end(), "checkpoint ", dir.string(), " has no ", quote(id),
                   " (it was saved from another model, LoRA configuration or training type)");
      const SavedGroup& s = it->second;
      std::vector<std::pair<std::string, torch::Tensor>> targets{{"master", g.master}};
      if (with_optimizer) {
        const auto& m = optimizer_moments.at(id);
        targets.emplace_back("exp_avg", m.first);
        targets.emplace_back("exp_avg_sq", m.second);
      }
      const auto [begin, end] = unit.shard_range(g);
      for (auto& [kind, target] : targets) target.zero_();  // padding stays zero
      for (const auto& entry : g.layout.entries) {
        const auto e = s.entry_index.find(entry.name);
        CVX_CHECK_AS(FormatError, e != s.entry_index.end(), "checkpoint ", dir.string(), " does not hold ",
                     quote(entry.name), " in ", quote(id));
        const FlatEntry& old_entry = s.layout.entries[e->second];
        CVX_CHECK_AS(FormatError, old_entry.shape == entry.shape, "checkpoint ", dir.string(), ": ", quote(entry.name),
                     " has shape ", shape_string(old_entry.shape), " there, ", shape_string(entry.shape), " here");
        const int64_t lo = std::max(begin, entry.offset), hi = std::min(end, entry.offset + entry.numel);
        if (lo >= hi) continue;
        for (auto& [kind, target] : targets)
          old.copy(id + "/" + kind, s.layout.shard_numel(), old_entry.offset + (lo - entry.offset),
                   target.narrow(0, lo - begin, hi - lo));
      }
    }
  }
  if (with_optimizer) optimizer->set_step_count(layout.value("optimizer_step", int64_t{0}));
  engine.after_optimizer_step();
  return layout.value("extra", nlohmann::json::object());
}

void gather_full_state(FsdpEngine& engine,
                       const std::function<void(const std::string& name, const torch::Tensor& value)>& sink,
                       bool trainable_only) {
  Communicator& group = engine.shard_group();
  torch::NoGradGuard no_grad;
  for (auto& unit : engine.units()) {
    for (auto& g : unit.groups()) {
      if (trainable_only && !g.layout.trainable) continue;
      const auto& local = g.layout.trainable ? g.master : g.shard;
      torch::Tensor full = local;
      if (unit.sharded()) {
        full = torch::empty({g.layout.padded_numel}, local.options());
        group.all_gather(local, full)->wait();
      }
      if (group.rank() == 0)
        for (const auto& entry : g.layout.entries)
          sink(entry.name, full.narrow(0, entry.offset, entry.numel).view(entry.shape));
    }
  }
}

ShardedWriteResult save_full_state(FsdpEngine& engine, const fs::path& dir, const std::string& base,
                                   const FullStateOptions& options) {
  const bool writer = engine.shard_group().rank() == 0 &&
                      (engine.replicate_group() == nullptr || engine.replicate_group()->rank() == 0);
  std::unique_ptr<ShardedSafetensorsStreamWriter> out;
  if (writer) {
    std::vector<TensorDecl> decls;
    for (const auto& unit : engine.units())
      for (const auto& g : unit.groups()) {
        if (options.trainable_only && !g.layout.trainable) continue;
        const torch::Dtype held = g.layout.trainable ? torch::kFloat32 : g.layout.dtype;
        for (const auto& e : g.layout.entries) decls.push_back({e.name, options.dtype.value_or(held), e.shape});
      }
    std::map<std::string, size_t> rank;
    for (size_t i = 0; i < options.order.size(); ++i) rank.emplace(options.order[i], i);
    std::stable_sort(decls.begin(), decls.end(), [&](const TensorDecl& a, const TensorDecl& b) {
      const auto ra = rank.find(a.name), rb = rank.find(b.name);
      return (ra == rank.end() ? rank.size() : ra->second) < (rb == rank.end() ? rank.size() : rb->second);
    });
    std::error_code ec;
    fs::create_directories(dir, ec);
    CVX_CHECK_AS(SystemError, !ec, "cannot create ", dir.string(), ": ", ec.message());
    out = std::make_unique<ShardedSafetensorsStreamWriter>(dir, base, decls, options.max_shard_bytes, options.metadata);
  }
  gather_full_state(
      engine,
      [&](const std::string& name, const torch::Tensor& value) {
        if (out) out->write(name, options.dtype ? value.to(*options.dtype) : value);
      },
      options.trainable_only);
  return out ? out->finish() : ShardedWriteResult{};
}

}  // namespace cvx
