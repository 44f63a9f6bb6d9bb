#include "cvx/train/training_export.h"

#include <map>

#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/dist/sharded_state.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/lora.h"

namespace cvx {
namespace fs = std::filesystem;

void export_lora(FsdpEngine& engine, const CogVideoXTransformer& model, const fs::path& file, torch::Dtype dtype) {
  std::map<std::string, torch::Tensor> values;
  gather_full_state(
      engine, [&](const std::string& name, const torch::Tensor& value) { values[name] = value.to(torch::kFloat32); },
      /*trainable_only=*/true);
  if (engine.shard_group().rank() != 0 || (engine.replicate_group() && engine.replicate_group()->rank() != 0)) return;
  save_lora_diffusers(file, *model, dtype, &values);
}

void export_transformer(FsdpEngine& engine, const CogVideoXTransformer& model, const fs::path& base_transformer_dir,
                        const fs::path& dir, torch::Dtype dtype, uint64_t max_shard_bytes) {
  const bool writer =
      engine.shard_group().rank() == 0 && (!engine.replicate_group() || engine.replicate_group()->rank() == 0);
  const fs::path staging = dir.parent_path() / (dir.filename().string() + ".partial");
  if (writer) {
    fs::remove_all(staging);
    fs::create_directories(staging);
  }
  FullStateOptions options;
  options.dtype = dtype;
  options.max_shard_bytes = max_shard_bytes;
  for (const auto& [name, tensor] : module_state(*model)) options.order.push_back(name);
  save_full_state(engine, staging, "diffusion_pytorch_model", options);
  if (!writer) return;
  const fs::path config = base_transformer_dir / "config.json";
  CVX_CHECK_AS(FormatError, fs::exists(config), "the base model's ", config.string(),
               " is missing: the exported transformer needs it");
  fs::copy_file(config, staging / "config.json", fs::copy_options::overwrite_existing);
  replace_directory(staging, dir);
}

void export_pipeline(const fs::path& base_model, const fs::path& dir, const fs::path& trained_transformer,
                     const fs::path& lora_file) {
  CVX_CHECK(trained_transformer.empty() != lora_file.empty(), "export_pipeline: give the transformer or the LoRA file");
  const fs::path staging = dir.parent_path() / (dir.filename().string() + ".partial");
  fs::remove_all(staging);
  fs::create_directories(staging);
  const fs::path base = fs::absolute(base_model);
  for (const auto& entry : fs::directory_iterator(base)) {
    const std::string name = entry.path().filename().string();
    if (name == "transformer" && !trained_transformer.empty()) continue;
    if (entry.is_directory()) {
      fs::create_directory_symlink(entry.path(), staging / name);
    } else {
      fs::copy_file(entry.path(), staging / name);  // model_index.json and friends: small, copied
    }
  }
  if (!trained_transformer.empty()) {
    fs::copy(trained_transformer, staging / "transformer", fs::copy_options::recursive);
  } else {
    fs::copy_file(lora_file, staging / "pytorch_lora_weights.safetensors");
  }
  replace_directory(staging, dir);
  CVX_INFO << "pipeline folder " << dir.string() << ": the base model's components (linked) with the trained "
           << (trained_transformer.empty() ? "LoRA (pytorch_lora_weights.safetensors)" : "transformer");
}

}  // namespace cvx
