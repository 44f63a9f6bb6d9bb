// [lora]: low-rank adapters on the transformer's linear layers (PEFT conventions).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cvx/core/error.h"

namespace cvx {

struct LoraConfig {
  int64_t rank = 128;
  double alpha = 64.0;  // scale = alpha / rank, as PEFT applies it
  std::vector<std::string> target_modules{"to_q", "to_k", "to_v", "to_out.0"};
  double dropout = 0.0;

  template <class V>
  void visit(V& v) {
    v("rank", rank, "LoRA rank r");
    v("alpha", alpha, "LoRA alpha; the update is scaled by alpha / rank (diffusers files get it folded in on export)");
    v("target_modules", target_modules,
      "linear layers to adapt, by module-name suffix (comma-separated, e.g. to_q,to_k,to_v,to_out.0,ff.net.0.proj)");
    v("dropout", dropout, "dropout on the LoRA input during training");
    v.alias("lora_alpha", "alpha");  // the official scheme's names
    v.alias("lora_dropout", "dropout");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, rank > 0, "rank must be > 0 (got ", rank, ")");
    CVX_CHECK_AS(ConfigError, alpha > 0, "alpha must be > 0 (got ", alpha, ")");
    CVX_CHECK_AS(ConfigError, !target_modules.empty(), "target_modules is empty: name at least one linear layer");
    CVX_CHECK_AS(ConfigError, dropout >= 0 && dropout < 1, "dropout must be in [0, 1) (got ", dropout, ")");
  }
  double scale() const { return alpha / static_cast<double>(rank); }
};

}  // namespace cvx
