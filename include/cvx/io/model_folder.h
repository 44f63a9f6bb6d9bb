// diffusers / transformers folders on disk: a pipeline folder (`model_index.json` + one folder per
// component) and component folders (`config.json` + safetensors weights, single or sharded).
// Also the strict, streaming state-dict loader and the writer of component folders.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cvx/io/safetensors.h"
#include "cvx/model/module_init.h"

namespace cvx {

struct ComponentFolder {
  std::string name;  // "transformer", "vae", ... (folder name)
  std::filesystem::path path;
  std::filesystem::path config_file;      // config.json, scheduler_config.json, tokenizer_config.json
  nlohmann::json config;                  // empty object when the component has none
  std::shared_ptr<TensorSource> weights;  // null when the component has no weights
  std::string class_name() const;         // "_class_name", or transformers' "architectures"[0]
};

// Opens one component folder. Weights are looked up as `<base>[.<variant>].safetensors.index.json`
// then `<base>[.<variant>].safetensors` for base in {diffusion_pytorch_model, model}; a folder with
// only PyTorch .bin weights is refused with a message on how to convert. `require_weights` makes a
// folder without weights an error.
ComponentFolder open_component(const std::filesystem::path& dir, const std::string& variant = "",
                               bool require_weights = false);

class ModelFolder {
 public:
  // `dir` must contain model_index.json.
  static ModelFolder open(const std::filesystem::path& dir);
  const std::filesystem::path& path() const { return path_; }
  const nlohmann::json& index() const { return index_; }
  std::string class_name() const;  // pipeline class, e.g. CogVideoXPipeline
  // Components listed in model_index.json as [library, class] (null entries skipped), in file order.
  const std::vector<std::string>& component_names() const { return components_; }
  bool has(const std::string& name) const;
  ComponentFolder component(const std::string& name, const std::string& variant = "") const;

 private:
  std::filesystem::path path_;
  nlohmann::json index_;
  std::vector<std::string> components_;
};

struct LoadOptions {
  std::optional<torch::ScalarType> dtype;  // convert parameters to this dtype, tensor by tensor
  std::string prefix;                      // source key = prefix + module key
  bool strict = true;                      // missing / unexpected / mismatched keys throw
};

struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the source
  std::vector<std::string> unexpected;  // in the source (under prefix), not in the module
  std::vector<std::string> mismatched;  // "name: file [a, b] vs module [c, d]"
  size_t num_loaded = 0;
  uint64_t bytes_read = 0;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // One line: counts plus the first few names of each kind.
  std::string summary() const;
};

// Copies every parameter and buffer of `module` from `source` by name. Each tensor is converted
// straight from the mapped file into the parameter's storage (no second copy of the model), so a
// checkpoint can be loaded in bf16 with little more memory than the bf16 model; unmaterialised
// parameters (ModuleInit::materialize = false) get their storage here, one at a time. With
// strict, missing, unexpected and shape-mismatched keys are reported together in one FormatError.
// Refused on a module whose structure is locked (flattened by the sharding engine: it loads
// shards itself).
LoadReport load_state(torch::nn::Module& module, const TensorSource& source, const LoadOptions& options = {});

// Builds `Model` (a module holder constructible from `Config` and a ModuleInit) from a component
// folder: config via `Config::from_json`, parameters created unmaterialised in `dtype` on `device`
// (no random initialisation), then loaded strictly.
template <class Model, class Config>
Model load_component_model(const std::filesystem::path& dir, torch::Dtype dtype, torch::Device device = torch::kCPU) {
  const ComponentFolder folder = open_component(dir, "", /*require_weights=*/true);
  const auto config = Config::from_json(folder.config, folder.config_file.string());
  Model model(config, ModuleInit::unmaterialized(dtype, device));
  LoadOptions options;
  options.dtype = dtype;
  load_state(*model, *folder.weights, options);
  return model;
}

// Parameters and buffers of `module` by name, in registration order.
NamedTensors module_state(const torch::nn::Module& module);

struct SaveOptions {
  std::string weights_base = "diffusion_pytorch_model";  // transformers uses "model"
  std::string config_name = "config.json";
  uint64_t max_shard_bytes = 10ull << 30;  // diffusers' default 10 GB
  std::map<std::string, std::string> metadata{{"format", "pt"}};
};

// Writes a component folder (config + single or sharded safetensors). The folder is assembled
// under a temporary name and renamed into place, so an existing folder is replaced whole or not at all.
void save_component(const std::filesystem::path& dir, const nlohmann::json& config, const NamedTensors& tensors,
                    const SaveOptions& options = {});

}  // namespace cvx
