// LoRA on a module tree of LoRALinear layers: injection by PEFT target names, the trainable state,
// and the diffusers LoRA file (`pytorch_lora_weights.safetensors`) in both directions.
//
// File conventions (diffusers CogVideoXLoraLoaderMixin / PEFT, see shared/spec/lora.md):
//   keys      "transformer.<module>.lora_A.weight" [r, in] and "transformer.<module>.lora_B.weight" [out, r]
//   metadata  {"format": "pt"}; newer diffusers optionally add "lora_adapter_metadata", a JSON object of
//             LoraConfig kwargs with "transformer." prefixes ("transformer.r", "transformer.lora_alpha", ...).
// diffusers 0.32 (and every CogVideoX training script) stores no alpha, and loading then uses
// lora_alpha = r, i.e. scale 1.0. So that such a loader reproduces the trained strength,
// save_lora_diffusers() folds alpha / r into lora_B, and records that in the metadata:
//   "lora_adapter_metadata": {"transformer.r": r, "transformer.lora_alpha": r,
//                             "transformer.target_modules": [module names]}  (+ rank_pattern /
//                             alpha_pattern when ranks differ between modules)
//   "cvx.lora_rank": r, "cvx.lora_alpha": trained alpha, "cvx.lora_targets": JSON list of modules,
//   "cvx.alpha_folded": "true"
// Default strength when loading: 1.0 for cvx files (alpha already folded) and for diffusers files
// without metadata (what diffusers does); lora_alpha / r for files with "lora_adapter_metadata";
// trained alpha / r for unfolded cvx files (save_lora_state). The multiplier scales all of these.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cvx/io/safetensors.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/lora_linear.h"

namespace cvx {

// Every LoRALinear below `root` with its qualified name ("transformer_blocks.0.attn1.to_q"),
// in registration order.
std::vector<std::pair<std::string, std::shared_ptr<LoRALinearImpl>>> lora_linears(const torch::nn::Module& root);

// The LoRALinear layers that carry an adapter, sorted by name.
std::vector<std::pair<std::string, std::shared_ptr<LoRALinearImpl>>> adapted_lora_linears(
    const torch::nn::Module& root);

// True when `name` is `target` or ends with "." + target (PEFT's target_modules rule): "to_q" matches
// "transformer_blocks.0.attn1.to_q" but not "...to_qx"; "to_out.0" does not match "...to_out.1".
bool lora_target_matches(const std::string& name, const std::string& target);

// Adds adapters (config.rank, config.alpha, config.dropout; parameters in `dtype`) to every LoRALinear
// of `root` matched by one of config.target_modules; an adapter already there is replaced. Returns
// the adapted module names, sorted. Throws ConfigError, before changing anything, when the config is
// invalid or a target matches no LoRALinear (naming the target and some of the available layers).
// materialize = false gives the adapters shapes only (see LoRALinearImpl::enable_lora).
std::vector<std::string> inject_lora(torch::nn::Module& root, const LoraConfig& config,
                                     torch::Dtype dtype = torch::kFloat32, bool materialize = true);

// The adapter parameters as "<module>.lora_A.weight" / "<module>.lora_B.weight" (the tensors
// themselves, unfolded: alpha / r not applied), modules sorted by name.
NamedTensors lora_state(const torch::nn::Module& root);
// The adapter parameters, for the optimizer (same order as lora_state).
std::vector<torch::Tensor> lora_parameters(const torch::nn::Module& root);
// requires_grad = true for adapter parameters, false for every other parameter of `root`.
void mark_only_lora_trainable(torch::nn::Module& root);

// Writes the diffusers file described above, atomically. lora_B is multiplied by alpha / r (in float32)
// before the cast to `dtype`; the runtime multiplier is not exported. Throws Error when `root` has
// no adapter.
// `values` (optional) supplies the adapter weights by lora_state() name instead of the layers
// (whose parameters a sharding engine may have released): a trainer exports gathered masters.
void save_lora_diffusers(const std::filesystem::path& file, const torch::nn::Module& root,
                         torch::Dtype dtype = torch::kFloat32,
                         const std::map<std::string, torch::Tensor>* values = nullptr);
// Writes lora_state() unfolded in its own dtype (trainer checkpoints), no "transformer." prefix, with
// the cvx.* metadata and "cvx.alpha_folded": "false"; load_lora() restores it at scale alpha / r.
// Throws Error when the adapters do not share one alpha.
void save_lora_state(const std::filesystem::path& file, const torch::nn::Module& root);

struct LoraLoadReport {
  std::vector<std::string> modules;  // adapted modules, sorted
  std::vector<int64_t> ranks;        // per module, aligned with `modules`
  int64_t rank = 0;                  // the most common rank
  double alpha = 0.0;                // alpha applied to modules of that rank
  double scale = 0.0;                // alpha / rank * multiplier for those modules
  double multiplier = 1.0;
  std::string alpha_source;                     // "cvx folded", "cvx", "lora_adapter_metadata", "default (alpha = r)"
  std::map<std::string, std::string> metadata;  // the file's header metadata
  bool alpha_folded = false;                    // a cvx export with alpha / r folded into lora_B
  std::vector<std::string> ignored_keys;        // other components' keys (text_encoder. ...), dora_scale
};

// Loads a LoRA file into `root`: ours (folded or not) or one saved by diffusers / PEFT, with or
// without the "transformer." prefix (PEFT's "base_model.model." is stripped too); keys of other
// components ("text_encoder.", "text_encoder_2.", "unet.") are ignored; old diffusers names
// ("to_q_lora.down/up", "to_out_lora.*", "lora.down/up", ".processor.") are converted. Adapters (in
// `dtype`, on each layer's device) are put on exactly the modules named in the file, replacing an
// adapter already there; rank per module = lora_B.shape[1]. Everything is validated before `root`
// changes; FormatError naming the file and the key for: a key that is not a LoRA weight, a module
// that is no LoRALinear of `root`, an A without its B (or B without A), shapes that do not fit the
// layer, DoRA weights.
LoraLoadReport load_lora(torch::nn::Module& root, const std::filesystem::path& file, double multiplier = 1.0,
                         torch::Dtype dtype = torch::kFloat32);

// Adapters of the whole tree, for the generator: merge folds every unmerged adapter into its weight
// (diffusers fuse_lora at the current strength), unmerge takes them out again.
void merge_lora(torch::nn::Module& root);
void unmerge_lora(torch::nn::Module& root);
// Runtime strength of every adapter (requires them unmerged).
void set_lora_multiplier(torch::nn::Module& root, double multiplier);
// Removes every adapter (unmerging first). Returns how many were removed.
size_t remove_lora(torch::nn::Module& root);

}  // namespace cvx
