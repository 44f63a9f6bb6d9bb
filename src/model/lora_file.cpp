// The diffusers LoRA file (pytorch_lora_weights.safetensors): export with alpha / r folded into
// lora_B, and loading of ours and of files written by diffusers / PEFT (see lora.h for the rules).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cvx/core/error.h"
#include "cvx/core/format_double.h"
#include "cvx/core/log.h"
#include "cvx/core/shape.h"
#include "cvx/model/lora.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {
using Layers = std::vector<std::pair<std::string, std::shared_ptr<LoRALinearImpl>>>;

const std::string kComponentPrefix = "transformer.";
const std::string kPeftModelPrefix = "base_model.model.";         // PeftModel.save_pretrained on the bare transformer
const std::string kAdapterMetadataKey = "lora_adapter_metadata";  // diffusers' LORA_ADAPTER_METADATA_KEY
const std::string kSuffixA = ".lora_A.weight";
const std::string kSuffixB = ".lora_B.weight";
// Other pipeline components that can share a LoRA file with the transformer; their keys are skipped.
const char* const kOtherComponents[] = {"text_encoder.", "text_encoder_2.", "text_encoder_3.", "unet.", "vae."};

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

// The most frequent value; ties go to the smaller one.
int64_t most_common(const std::vector<int64_t>& values) {
  std::map<int64_t, size_t> counts;
  for (int64_t v : values) ++counts[v];
  int64_t best = 0;
  size_t best_count = 0;
  for (const auto& [value, count] : counts) {
    if (count > best_count) {
      best = value;
      best_count = count;
    }
  }
  return best;
}

// diffusers' pre-PEFT attention-processor names (KEYS_TO_ALWAYS_REPLACE, then the first matching
// pattern of UNET_TO_DIFFUSERS, as convert_state_dict applies them).
std::string convert_legacy_name(const std::string& name) {
  static const std::pair<const char*, const char*> kPatterns[] = {
      {".to_out_lora.up", ".to_out.0.lora_B"},
      {".to_out_lora.down", ".to_out.0.lora_A"},
      {".to_q_lora.down", ".to_q.lora_A"},
      {".to_q_lora.up", ".to_q.lora_B"},
      {".to_k_lora.down", ".to_k.lora_A"},
      {".to_k_lora.up", ".to_k.lora_B"},
      {".to_v_lora.down", ".to_v.lora_A"},
      {".to_v_lora.up", ".to_v.lora_B"},
      {".lora.up", ".lora_B"},
      {".lora.down", ".lora_A"},
  };
  std::string key = "." + name;  // the patterns start with '.', also for a top-level module
  replace_all(key, ".processor.", ".");
  for (const auto& [from, to] : kPatterns) {
    if (key.find(from) != std::string::npos) {
      replace_all(key, from, to);
      break;
    }
  }
  return key.substr(1);
}

// How alpha is chosen per module; see lora.h.
struct AlphaRule {
  std::string source;
  bool folded = false;
  std::optional<double> alpha;                          // nullopt: alpha = the module's rank (scale 1)
  std::vector<std::pair<std::string, double>> pattern;  // PEFT alpha_pattern, by target suffix
  bool rslora = false;

  double alpha_for(const std::string& module, int64_t rank) const {
    double a = alpha ? *alpha : static_cast<double>(rank);
    for (const auto& [target, value] : pattern) {
      if (lora_target_matches(module, target)) {
        a = value;
        break;
      }
    }
    // rsLoRA scales by alpha / sqrt(r); LoRALinear applies alpha / r.
    if (rslora) a *= std::sqrt(static_cast<double>(rank));
    return a;
  }
};

AlphaRule alpha_rule(const std::map<std::string, std::string>& metadata, const std::string& where) {
  AlphaRule rule;
  if (auto it = metadata.find("cvx.alpha_folded"); it != metadata.end()) {
    if (it->second == "true") {
      rule.source = "cvx folded (alpha = r)";
      rule.folded = true;
      return rule;
    }
    CVX_CHECK_AS(FormatError, it->second == "false", where,
                 ": metadata cvx.alpha_folded must be \"true\" or \"false\", got ", quote(it->second));
    const auto alpha = metadata.find("cvx.lora_alpha");
    CVX_CHECK_AS(FormatError, alpha != metadata.end(), where,
                 ": metadata has cvx.alpha_folded = false but no cvx.lora_alpha");
    char* end = nullptr;
    const double value = std::strtod(alpha->second.c_str(), &end);
    CVX_CHECK_AS(FormatError, !alpha->second.empty() && *end == '\0' && std::isfinite(value), where,
                 ": metadata cvx.lora_alpha is not a number: ", quote(alpha->second));
    rule.source = "cvx";
    rule.alpha = value;
    return rule;
  }
  const auto raw = metadata.find(kAdapterMetadataKey);
  if (raw == metadata.end()) {
    // What diffusers does without metadata: lora_alpha = r, i.e. scale 1.
    rule.source = "default (alpha = r)";
    return rule;
  }
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(raw->second);
  } catch (const nlohmann::json::exception& e) {
    CVX_THROW_AS(FormatError, where, ": metadata ", kAdapterMetadataKey, " is not valid JSON: ", one_line(e.what()));
  }
  CVX_CHECK_AS(FormatError, json.is_object(), where, ": metadata ", kAdapterMetadataKey, " is not a JSON object");
  // diffusers keeps the keys of its component ("transformer.r" -> "r"); a bare PEFT config is used as is.
  bool prefixed = false;
  for (const auto& item : json.items()) prefixed = prefixed || starts_with(item.key(), kComponentPrefix);
  nlohmann::json config = nlohmann::json::object();
  for (const auto& item : json.items()) {
    if (!prefixed) {
      config[item.key()] = item.value();
    } else if (starts_with(item.key(), kComponentPrefix)) {
      config[item.key().substr(kComponentPrefix.size())] = item.value();
    }
  }
  if (config.empty()) {
    rule.source = "default (alpha = r)";
    return rule;
  }
  const auto number = [&](const nlohmann::json& value, const std::string& name) {
    CVX_CHECK_AS(FormatError, value.is_number(), where, ": ", kAdapterMetadataKey, " ", name, " is not a number");
    return value.get<double>();
  };
  const auto flag = [&](const char* name) {
    return config.contains(name) && config[name].is_boolean() && config[name].get<bool>();
  };
  CVX_CHECK_AS(FormatError, !flag("use_dora"), where, ": DoRA adapters are not supported");
  rule.source = kAdapterMetadataKey;
  // PEFT's LoraConfig default when the key is absent.
  rule.alpha = config.contains("lora_alpha") ? number(config["lora_alpha"], "lora_alpha") : 8.0;
  rule.rslora = flag("use_rslora");
  if (config.contains("alpha_pattern") && config["alpha_pattern"].is_object()) {
    for (const auto& item : config["alpha_pattern"].items())
      rule.pattern.emplace_back(item.key(), number(item.value(), "alpha_pattern." + item.key()));
  }
  return rule;
}

struct FileEntry {
  std::string key_a, key_b;  // keys as written in the file
};

std::map<std::string, std::string> cvx_metadata(const Layers& layers, bool folded) {
  std::vector<int64_t> ranks;
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& [name, layer] : layers) {
    ranks.push_back(layer->lora_rank());
    targets.push_back(name);
  }
  const int64_t rank = most_common(ranks);
  double alpha = 0.0;
  for (const auto& [name, layer] : layers) {
    if (layer->lora_rank() == rank) {
      alpha = layer->lora_alpha();
      break;
    }
  }
  return {{"format", "pt"},
          {"cvx.version", CVX_VERSION},
          {"cvx.lora_rank", std::to_string(rank)},
          {"cvx.lora_alpha", format_double(alpha)},
          {"cvx.lora_targets", targets.dump()},
          {"cvx.alpha_folded", folded ? "true" : "false"}};
}
}  // namespace

void save_lora_diffusers(const fs::path& file, const torch::nn::Module& root, torch::Dtype dtype,
                         const std::map<std::string, torch::Tensor>* values) {
  CVX_CHECK_AS(ConfigError, c10::isFloatingType(dtype), "LoRA export needs a floating-point dtype");
  const Layers layers = adapted_lora_linears(root);
  CVX_CHECK(!layers.empty(), "the model has no LoRA adapters: nothing to write to ", file.string());
  torch::NoGradGuard no_grad;
  NamedTensors tensors;
  std::vector<int64_t> ranks;
  for (const auto& [name, layer] : layers) {
    const std::string module = name;  // structured bindings cannot be captured in C++17
    const auto value = [&](const std::string& suffix, const torch::Tensor& held) {
      if (!values) return held.detach();
      const auto it = values->find(module + suffix);
      CVX_CHECK(it != values->end(), "LoRA export of ", file.string(), ": no value given for ", module + suffix);
      CVX_CHECK(it->second.sizes() == held.sizes(), "LoRA export of ", file.string(), ": ", module + suffix,
                " has shape ", it->second.sizes(), ", the adapter ", held.sizes());
      return it->second.detach();
    };
    const auto a = value(kSuffixA, layer->lora_A->weight);  // [r, in]
    const auto b = value(kSuffixB, layer->lora_B->weight);  // [out, r]
    // Fold the trained scale (not the runtime multiplier) in float32 or wider, then round once.
    const auto compute = torch::promote_types(b.scalar_type(), torch::kFloat32);
    const double scale = layer->lora_alpha() / static_cast<double>(layer->lora_rank());
    tensors.emplace_back(kComponentPrefix + name + kSuffixA, a.to(dtype));
    tensors.emplace_back(kComponentPrefix + name + kSuffixB, (b.to(compute) * scale).to(dtype));
    ranks.push_back(layer->lora_rank());
  }
  // LoraConfig kwargs for diffusers versions that read them: after folding, alpha = r everywhere.
  const int64_t rank = most_common(ranks);
  nlohmann::json adapter = nlohmann::json::object();
  nlohmann::json targets = nlohmann::json::array();
  nlohmann::json rank_pattern = nlohmann::json::object();
  for (const auto& [name, layer] : layers) {
    targets.push_back(name);
    if (layer->lora_rank() != rank) rank_pattern[name] = layer->lora_rank();
  }
  adapter[kComponentPrefix + "r"] = rank;
  adapter[kComponentPrefix + "lora_alpha"] = rank;
  adapter[kComponentPrefix + "target_modules"] = targets;
  if (!rank_pattern.empty()) {
    adapter[kComponentPrefix + "rank_pattern"] = rank_pattern;
    adapter[kComponentPrefix + "alpha_pattern"] = rank_pattern;
  }
  auto metadata = cvx_metadata(layers, /*folded=*/true);
  metadata[kAdapterMetadataKey] = adapter.dump(2);
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  save_safetensors(file, tensors, metadata);
}

void save_lora_state(const fs::path& file, const torch::nn::Module& root) {
  const Layers layers = adapted_lora_linears(root);
  CVX_CHECK(!layers.empty(), "the model has no LoRA adapters: nothing to write to ", file.string());
  for (const auto& [name, layer] : layers) {
    CVX_CHECK(layer->lora_alpha() == layers.front().second->lora_alpha(), "LoRA adapters with different alphas (",
              layers.front().first, ": ", layers.front().second->lora_alpha(), ", ", name, ": ", layer->lora_alpha(),
              ") cannot be saved unfolded; use save_lora_diffusers");
  }
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  save_safetensors(file, lora_state(root), cvx_metadata(layers, /*folded=*/false));
}

LoraLoadReport load_lora(torch::nn::Module& root, const fs::path& file, double multiplier, torch::Dtype dtype) {
  CVX_CHECK_AS(ConfigError, std::isfinite(multiplier), "LoRA multiplier must be finite (got ", multiplier, ")");
  CVX_CHECK_AS(ConfigError, c10::isFloatingType(dtype), "LoRA parameters need a floating-point dtype");
  const auto source = SafetensorsFile::open(file);
  const std::string where = "LoRA file " + file.string();
  LoraLoadReport report;
  report.metadata = source->metadata();
  report.multiplier = multiplier;

  // 1. Keys -> module names (diffusers lora_state_dict + load_lora_adapter).
  const auto names = source->names();
  bool has_component_prefix = false;
  for (const auto& key : names) has_component_prefix = has_component_prefix || starts_with(key, kComponentPrefix);
  std::map<std::string, FileEntry> entries;  // module -> its keys
  for (const auto& key : names) {
    std::string name = key;
    if (has_component_prefix) {
      if (!starts_with(name, kComponentPrefix)) {
        report.ignored_keys.push_back(key);
        continue;
      }
      name = name.substr(kComponentPrefix.size());
    } else {
      bool other = false;
      for (const char* prefix : kOtherComponents) other = other || starts_with(name, prefix);
      if (other) {
        report.ignored_keys.push_back(key);
        continue;
      }
    }
    if (starts_with(name, kPeftModelPrefix)) name = name.substr(kPeftModelPrefix.size());
    // diffusers drops DoRA magnitudes it cannot use (with a warning); we do the same.
    if (name.find("dora_scale") != std::string::npos) {
      report.ignored_keys.push_back(key);
      CVX_WARN << where << ": ignoring DoRA key " << key << " (DoRA is not supported)";
      continue;
    }
    CVX_CHECK_AS(FormatError, name.find("lora_magnitude_vector") == std::string::npos, where, ": key ", quote(key),
                 " belongs to a DoRA adapter, which is not supported");
    name = convert_legacy_name(name);
    const bool is_a = ends_with(name, kSuffixA);
    const bool is_b = ends_with(name, kSuffixB);
    CVX_CHECK_AS(FormatError, is_a || is_b, where, ": key ", quote(key),
                 " is not a LoRA weight (expected <module>.lora_A.weight or <module>.lora_B.weight)");
    const std::string module = name.substr(0, name.size() - (is_a ? kSuffixA : kSuffixB).size());
    CVX_CHECK_AS(FormatError, !module.empty(), where, ": key ", quote(key), " names no module");
    std::string& slot = is_a ? entries[module].key_a : entries[module].key_b;
    CVX_CHECK_AS(FormatError, slot.empty(), where, ": keys ", quote(slot), " and ", quote(key),
                 " are the same LoRA matrix of ", module);
    slot = key;
  }
  CVX_CHECK_AS(FormatError, !entries.empty(), where, " holds no transformer LoRA weights (", report.ignored_keys.size(),
               " keys of other components ignored)");
  if (!report.ignored_keys.empty())
    CVX_INFO << where << ": " << report.ignored_keys.size() << " keys not for the transformer ignored, e.g. "
             << report.ignored_keys.front();

  // 2. Validate everything against the model before changing it.
  std::map<std::string, std::shared_ptr<LoRALinearImpl>> layers;
  for (auto& [name, layer] : lora_linears(root)) layers.emplace(name, layer);
  std::vector<std::shared_ptr<LoRALinearImpl>> targets;
  for (const auto& [module, entry] : entries) {
    const std::string& some_key = entry.key_a.empty() ? entry.key_b : entry.key_a;
    CVX_CHECK_AS(FormatError, !entry.key_a.empty() && !entry.key_b.empty(), where, ": key ", quote(some_key),
                 " has no ", entry.key_a.empty() ? "lora_A" : "lora_B", " partner for module ", module);
    const auto layer = layers.find(module);
    if (layer == layers.end()) {
      std::string example = layers.empty() ? "the model has none" : "e.g. " + layers.begin()->first;
      CVX_THROW_AS(FormatError, where, ": key ", quote(some_key), " names module ", quote(module),
                   ", which is no LoRALinear layer of the model (", layers.size(), " layers, ", example, ")");
    }
    const TensorInfo& a = source->info(entry.key_a);
    const TensorInfo& b = source->info(entry.key_b);
    const LoRALinearImpl& l = *layer->second;
    CVX_CHECK_AS(FormatError, c10::isFloatingType(a.scalar_type) && c10::isFloatingType(b.scalar_type), where,
                 ": LoRA weights of ", module, " are not floating point (", a.dtype, ", ", b.dtype, ")");
    const bool fits = a.shape.size() == 2 && b.shape.size() == 2 && a.shape[0] > 0 && a.shape[0] == b.shape[1] &&
                      a.shape[1] == l.in_features() && b.shape[0] == l.out_features();
    CVX_CHECK_AS(FormatError, fits, where, ": keys ", quote(entry.key_a), " ", shape_string(a.shape), " and ",
                 quote(entry.key_b), " ", shape_string(b.shape), " do not fit layer ", module, " (expected [r, ",
                 l.in_features(), "] and [", l.out_features(), ", r])");
    CVX_CHECK(!l.merged(), "cannot load ", file.string(), " into ", module,
              ": its LoRA adapter is merged (unmerge first)");
    targets.push_back(layer->second);
    report.modules.push_back(module);
    report.ranks.push_back(b.shape[1]);
  }
  const AlphaRule rule = alpha_rule(report.metadata, where);

  // 3. Inject and copy.
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (const auto& [module, entry] : entries) {
    LoRALinearImpl& layer = *targets[i];
    layer.enable_lora(report.ranks[i], rule.alpha_for(module, report.ranks[i]), 0.0, dtype);
    layer.lora_A->weight.copy_(source->tensor(entry.key_a));
    layer.lora_B->weight.copy_(source->tensor(entry.key_b));
    layer.set_lora_multiplier(multiplier);
    ++i;
  }
  report.rank = most_common(report.ranks);
  for (size_t j = 0; j < report.modules.size(); ++j) {
    if (report.ranks[j] == report.rank) {
      report.alpha = rule.alpha_for(report.modules[j], report.rank);
      break;
    }
  }
  report.scale = report.alpha / static_cast<double>(report.rank) * multiplier;
  report.alpha_source = rule.source;
  report.alpha_folded = rule.folded;
  return report;
}

}  // namespace cvx
