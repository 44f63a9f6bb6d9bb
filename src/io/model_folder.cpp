#include "cvx/io/model_folder.h"

#include <unistd.h>

#include <set>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/core/module_lock.h"
#include "cvx/core/shape.h"
#include "cvx/core/tensor_storage.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/json_file.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

std::string first_few(const std::vector<std::string>& names, size_t limit = 8) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += ", ... (" + std::to_string(names.size() - limit) + " more)";
  return out;
}

const char* const kConfigNames[] = {"config.json", "scheduler_config.json", "tokenizer_config.json"};
const char* const kWeightBases[] = {"diffusion_pytorch_model", "model"};
}  // namespace

std::string ComponentFolder::class_name() const {
  if (config.contains("_class_name") && config["_class_name"].is_string()) return config["_class_name"];
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
      config["architectures"][0].is_string())
    return config["architectures"][0];
  if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string()) return config["tokenizer_class"];
  return "";
}

ComponentFolder open_component(const fs::path& dir, const std::string& variant, bool require_weights) {
  CVX_CHECK_AS(ConfigError, fs::is_directory(dir), "model component folder ", dir.string(), " does not exist");
  ComponentFolder c;
  c.name = dir.filename().string();
  c.path = dir;
  c.config = nlohmann::json::object();
  for (const char* name : kConfigNames) {
    if (fs::exists(dir / name)) {
      c.config_file = dir / name;
      c.config = read_json_file(c.config_file);
      CVX_CHECK_AS(FormatError, c.config.is_object(), c.config_file.string(), " must hold a JSON object");
      break;
    }
  }
  const std::string suffix = variant.empty() ? "" : "." + variant;
  for (const char* base : kWeightBases) {
    const fs::path index = dir / (std::string(base) + suffix + ".safetensors.index.json");
    const fs::path single = dir / (std::string(base) + suffix + ".safetensors");
    if (fs::exists(index)) {
      c.weights = ShardedSafetensors::open(index);
      break;
    }
    if (fs::exists(single)) {
      c.weights = SafetensorsFile::open(single);
      break;
    }
  }
  if (!c.weights) {
    bool has_bin = false;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      has_bin = has_bin || (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0);
    }
    CVX_CHECK_AS(ConfigError, !has_bin, dir.string(),
                 " has only PyTorch .bin weights; cvx reads safetensors. Convert once in Python: "
                 "Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)");
    CVX_CHECK_AS(ConfigError, !require_weights, "no weights in ", dir.string(), ": expected ",
                 "diffusion_pytorch_model", suffix, ".safetensors[.index.json] or model", suffix,
                 ".safetensors[.index.json]");
  }
  return c;
}

ModelFolder ModelFolder::open(const fs::path& dir) {
  ModelFolder m;
  m.path_ = dir;
  const fs::path index = dir / "model_index.json";
  CVX_CHECK_AS(ConfigError, fs::exists(index), dir.string(),
               " is not a diffusers pipeline folder (no model_index.json); point at the downloaded model folder "
               "(transformer/, vae/, text_encoder/, tokenizer/, scheduler/)");
  m.index_ = read_json_file(index);
  CVX_CHECK_AS(FormatError, m.index_.is_object(), index.string(), " must hold a JSON object");
  for (const auto& [key, value] : m.index_.items()) {
    // Components are [library, class]; [null, null] marks an absent optional one.
    if (key.empty() || key[0] == '_' || !value.is_array() || value.size() != 2 || value[0].is_null()) continue;
    m.components_.push_back(key);
  }
  return m;
}

std::string ModelFolder::class_name() const {
  return index_.contains("_class_name") && index_["_class_name"].is_string() ? index_["_class_name"].get<std::string>()
                                                                             : "";
}

bool ModelFolder::has(const std::string& name) const {
  return std::find(components_.begin(), components_.end(), name) != components_.end();
}

ComponentFolder ModelFolder::component(const std::string& name, const std::string& variant) const {
  CVX_CHECK_AS(ConfigError, has(name), (path_ / "model_index.json").string(), " lists no component '", name,
               "' (it has: ", first_few(components_), ")");
  return open_component(path_ / name, variant);
}

std::string LoadReport::summary() const {
  std::ostringstream os;
  os << num_loaded << " tensors loaded";
  if (!missing.empty()) os << "; " << missing.size() << " missing from the file: " << first_few(missing);
  if (!unexpected.empty()) os << "; " << unexpected.size() << " unexpected in the file: " << first_few(unexpected);
  if (!mismatched.empty()) os << "; " << mismatched.size() << " with a different shape: " << first_few(mismatched, 4);
  return os.str();
}

NamedTensors module_state(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

LoadReport load_state(torch::nn::Module& module, const TensorSource& source, const LoadOptions& options) {
  check_module_unlocked(module, "load weights into it with load_state");
  LoadReport report;
  torch::NoGradGuard no_grad;
  std::set<std::string> wanted;
  for (auto& [name, target] : module_state(module)) {
    const std::string key = options.prefix + name;
    wanted.insert(key);
    if (!source.contains(key)) {
      report.missing.push_back(key);
      continue;
    }
    const TensorInfo& info = source.info(key);
    if (c10::IntArrayRef(info.shape) != target.sizes()) {
      report.mismatched.push_back(key + ": file " + shape_string(info.shape) + " vs model " +
                                  shape_string(target.sizes()));
      continue;
    }
    if ((options.dtype && target.scalar_type() != *options.dtype) || !is_materialized(target)) {
      // (Re-)allocate this one tensor in the wanted dtype; old storage is freed right away.
      target.set_data(
          torch::empty(target.sizes(), target.options().dtype(options.dtype.value_or(target.scalar_type()))));
    }
    target.copy_(source.tensor(key));
    ++report.num_loaded;
    report.bytes_read += info.num_bytes();
  }
  for (const auto& name : source.names()) {
    if (name.compare(0, options.prefix.size(), options.prefix) == 0 && !wanted.count(name))
      report.unexpected.push_back(name);
  }
  if (options.strict && !report.ok()) {
    CVX_THROW_AS(FormatError, "weights in ", source.description(), " do not match the model: ", report.summary());
  }
  return report;
}

void save_component(const fs::path& dir, const nlohmann::json& config, const NamedTensors& tensors,
                    const SaveOptions& options) {
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  CVX_CHECK_AS(SystemError, !ec, "cannot create ", parent.string(), ": ", ec.message());
  const fs::path staging = temp_path_for(dir);
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  CVX_CHECK_AS(SystemError, !ec, "cannot create ", staging.string(), ": ", ec.message());
  try {
    write_json_file(staging / options.config_name, config);
    save_safetensors_sharded(staging, options.weights_base, tensors, options.max_shard_bytes, options.metadata);
    replace_directory(staging, dir);
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
}

}  // namespace cvx
