// ShardedSafetensors: a checkpoint spread over several files by a `*.safetensors.index.json` weight
// map, cross-checked against the shards; and open_tensor_source, which picks the reader by file name.
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/io/safetensors.h"

namespace cvx {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

nlohmann::json read_json(const fs::path& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  CVX_CHECK_AS(SystemError, in.good(), "cannot open safetensors index ", quote(path.string()), ": ",
               std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  CVX_CHECK_AS(SystemError, !in.bad(), "cannot read safetensors index ", quote(path.string()), ": ",
               std::strerror(errno));
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    CVX_THROW_AS(FormatError, where, "not valid JSON: ", one_line(e.what()));
  }
}

// Shard names are resolved beside the index; escaping the folder would be a broken (or hostile) map.
bool is_plain_relative(const std::string& file) {
  const fs::path p(file);
  if (file.empty() || p.is_absolute()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<ShardedSafetensors> ShardedSafetensors::open(const fs::path& index_json) {
  const std::string where = "safetensors index " + quote(index_json.string()) + ": ";
  const nlohmann::json index = read_json(index_json, where);
  CVX_CHECK_AS(FormatError, index.is_object(), where, "not a JSON object");
  const auto map = index.find("weight_map");
  CVX_CHECK_AS(FormatError, map != index.end() && map->is_object(), where, "no \"weight_map\" object");

  auto sharded = std::make_shared<ShardedSafetensors>();
  sharded->index_path_ = index_json;
  std::map<std::string, size_t> shard_of_file;  // sorted: shard order follows the numbered file names
  for (const auto& [tensor, file] : map->items()) {
    CVX_CHECK_AS(FormatError, file.is_string() && is_plain_relative(file.get<std::string>()), where, "tensor ",
                 quote(tensor), " maps to ", one_line(file.dump(), 60), ", not a file name beside the index");
    shard_of_file.emplace(file.get<std::string>(), 0);
  }
  for (auto& [file, position] : shard_of_file) {
    const fs::path path = index_json.parent_path() / file;
    std::error_code ec;
    CVX_CHECK_AS(FormatError, fs::exists(path, ec), where, "shard ", quote(file), " does not exist");
    try {
      sharded->shards_.push_back(SafetensorsFile::open(path));
    } catch (const FormatError& e) {
      CVX_THROW_AS(FormatError, where, "shard ", quote(file), ": ", e.message());
    }
    position = sharded->shards_.size() - 1;
  }

  // Every tensor in exactly one shard, and that shard the one the map names.
  const auto shard_name = [&](size_t k) { return quote(sharded->shards_[k]->path().filename().string()); };
  for (size_t k = 0; k < sharded->shards_.size(); ++k) {
    for (const TensorInfo& t : sharded->shards_[k]->header().tensors) {
      const auto [it, fresh] = sharded->owner_.emplace(t.name, k);
      CVX_CHECK_AS(FormatError, fresh, where, "tensor ", quote(t.name), " is in two shards, ", shard_name(it->second),
                   " and ", shard_name(k));
      CVX_CHECK_AS(FormatError, map->contains(t.name), where, "tensor ", quote(t.name), " in shard ", shard_name(k),
                   " is missing from the weight map");
    }
  }
  for (const auto& [tensor, file] : map->items()) {
    const auto it = sharded->owner_.find(tensor);
    const std::string& name = file.get_ref<const std::string&>();
    if (it != sharded->owner_.end() && it->second == shard_of_file.at(name)) continue;
    CVX_THROW_AS(
        FormatError, where, "tensor ", quote(tensor), " is mapped to ", quote(name), ", which does not contain it",
        it == sharded->owner_.end() ? std::string(" (no shard does)") : " (it is in " + shard_name(it->second) + ")");
  }

  if (const auto meta = index.find("metadata"); meta != index.end()) {
    CVX_CHECK_AS(FormatError, meta->is_object(), where, "\"metadata\" is ", one_line(meta->dump(), 60),
                 ", not an object");
    for (const auto& [key, value] : meta->items()) {
      sharded->metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
    }
  }
  if (!sharded->shards_.empty()) sharded->metadata_.merge(sharded->shards_.front()->metadata());
  return sharded;
}

std::vector<std::string> ShardedSafetensors::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& entry : owner_) out.push_back(entry.first);
  return out;
}

bool ShardedSafetensors::contains(const std::string& name) const { return owner_.count(name) != 0; }

const SafetensorsFile& ShardedSafetensors::shard_of(const std::string& name) const {
  const auto it = owner_.find(name);
  CVX_CHECK_AS(FormatError, it != owner_.end(), "safetensors index ", quote(index_path_.string()), " has no tensor ",
               quote(name));
  return *shards_[it->second];
}

const TensorInfo& ShardedSafetensors::info(const std::string& name) const { return shard_of(name).info(name); }

torch::Tensor ShardedSafetensors::tensor(const std::string& name) const { return shard_of(name).tensor(name); }

std::map<std::string, std::string> ShardedSafetensors::metadata() const { return metadata_; }

std::shared_ptr<TensorSource> open_tensor_source(const fs::path& path) {
  const std::string name = path.filename().string();
  if (ends_with(name, ".safetensors.index.json")) return ShardedSafetensors::open(path);
  if (ends_with(name, ".safetensors")) return SafetensorsFile::open(path);
  CVX_THROW_AS(ConfigError, "cannot load tensors from ", quote(path.string()),
               ": expected a .safetensors file or a .safetensors.index.json index");
}

}  // namespace cvx
