// LoRA injection by PEFT target names, the adapter state and whole-tree merge/strength helpers.
// The file format lives in lora_file.cpp.
#include "cvx/model/lora.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "cvx/core/error.h"

namespace cvx {

namespace {
using Layers = std::vector<std::pair<std::string, std::shared_ptr<LoRALinearImpl>>>;

}  // namespace

std::vector<std::pair<std::string, std::shared_ptr<LoRALinearImpl>>> adapted_lora_linears(
    const torch::nn::Module& root) {
  Layers out;
  for (auto& entry : lora_linears(root))
    if (entry.second->has_lora()) out.push_back(std::move(entry));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

namespace {

// "to_q, to_k, ... (240 LoRALinear layers, e.g. transformer_blocks.0.attn1.to_q)": enough for a user
// to spot the right suffix without dumping the whole model.
std::string describe_layers(const Layers& layers) {
  if (layers.empty()) return "the model has no LoRALinear layers";
  std::vector<std::string> leaves;
  for (const auto& [name, layer] : layers) {
    // The last component, or the last two when the last is a list index ("to_out.0").
    const auto dot = name.rfind('.');
    std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
    if (dot != std::string::npos && !leaf.empty() &&
        std::all_of(leaf.begin(), leaf.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
      const auto prev = name.rfind('.', dot - 1);
      leaf = prev == std::string::npos ? name : name.substr(prev + 1);
    }
    if (std::find(leaves.begin(), leaves.end(), leaf) == leaves.end()) leaves.push_back(leaf);
  }
  std::string out = "LoRALinear layers end with: ";
  for (size_t i = 0; i < leaves.size() && i < 16; ++i) out += (i ? ", " : "") + leaves[i];
  if (leaves.size() > 16) out += ", ...";
  out += " (" + std::to_string(layers.size()) + " layers, e.g. " + layers.front().first + ")";
  return out;
}
}  // namespace

Layers lora_linears(const torch::nn::Module& root) {
  Layers out;
  // include_self=false: `root` need not live in a shared_ptr.
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (auto layer = std::dynamic_pointer_cast<LoRALinearImpl>(item.value())) out.emplace_back(item.key(), layer);
  }
  return out;
}

bool lora_target_matches(const std::string& name, const std::string& target) {
  if (target.empty() || name.size() < target.size()) return false;
  if (name.compare(name.size() - target.size(), target.size(), target) != 0) return false;
  return name.size() == target.size() || name[name.size() - target.size() - 1] == '.';
}

std::vector<std::string> inject_lora(torch::nn::Module& root, const LoraConfig& config, torch::Dtype dtype,
                                     bool materialize) {
  config.validate();
  const Layers layers = lora_linears(root);
  std::set<std::string> selected;
  for (const auto& target : config.target_modules) {
    bool found = false;
    for (const auto& [name, layer] : layers) {
      if (lora_target_matches(name, target)) {
        selected.insert(name);
        found = true;
      }
    }
    CVX_CHECK_AS(ConfigError, found, "LoRA target module ", quote(target), " matches no linear layer; ",
                 describe_layers(layers));
  }
  for (const auto& [name, layer] : layers) {
    CVX_CHECK(!(selected.count(name) && layer->merged()), "cannot add a LoRA adapter to ", name,
              ": its current adapter is merged (unmerge first)");
  }
  for (const auto& [name, layer] : layers) {
    if (selected.count(name)) layer->enable_lora(config.rank, config.alpha, config.dropout, dtype, materialize);
  }
  return {selected.begin(), selected.end()};
}

NamedTensors lora_state(const torch::nn::Module& root) {
  NamedTensors out;
  for (const auto& [name, layer] : adapted_lora_linears(root)) {
    out.emplace_back(name + ".lora_A.weight", layer->lora_A->weight);
    out.emplace_back(name + ".lora_B.weight", layer->lora_B->weight);
  }
  return out;
}

std::vector<torch::Tensor> lora_parameters(const torch::nn::Module& root) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, tensor] : lora_state(root)) out.push_back(tensor);
  return out;
}

void mark_only_lora_trainable(torch::nn::Module& root) {
  for (auto& parameter : root.parameters(/*recurse=*/true)) parameter.set_requires_grad(false);
  for (auto& parameter : lora_parameters(root)) parameter.set_requires_grad(true);
}

void merge_lora(torch::nn::Module& root) {
  for (const auto& [name, layer] : lora_linears(root)) layer->merge();
}

void unmerge_lora(torch::nn::Module& root) {
  for (const auto& [name, layer] : lora_linears(root)) layer->unmerge();
}

void set_lora_multiplier(torch::nn::Module& root, double multiplier) {
  const Layers layers = adapted_lora_linears(root);
  for (const auto& [name, layer] : layers)
    CVX_CHECK(!layer->merged(), "cannot change the LoRA strength of ", name, " while merged (unmerge first)");
  for (const auto& [name, layer] : layers) layer->set_lora_multiplier(multiplier);
}

size_t remove_lora(torch::nn::Module& root) {
  size_t removed = 0;
  for (const auto& [name, layer] : lora_linears(root)) {
    if (!layer->has_lora()) continue;
    layer->disable_lora();
    ++removed;
  }
  return removed;
}

}  // namespace cvx
