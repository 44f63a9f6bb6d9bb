// [model]: which diffusers-format CogVideoX checkpoint to use and how to hold its weights.
#pragma once
#include <string>
#include <vector>

#include "cvx/core/error.h"
#include "cvx/model/model_variant.h"

namespace cvx {

// The released variants; "auto" reads it from transformer/config.json.
inline const std::vector<std::string>& model_variant_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out{"auto"};
    out.insert(out.end(), released_variants().begin(), released_variants().end());
    return out;
  }();
  return names;
}

struct ModelConfig {
  std::string path;  // diffusers folder: transformer/ vae/ text_encoder/ tokenizer/ scheduler/
  std::string variant = "auto";
  std::string dtype = "bf16";  // frozen base weights; LoRA masters stay fp32

  template <class V>
  void visit(V& v) {
    v("path", path, "diffusers-format CogVideoX folder (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)");
    v.choice("variant", variant, model_variant_names(), "model variant; auto reads it from transformer/config.json");
    v.choice("dtype", dtype, {"bf16", "fp16", "fp32"}, "dtype of the frozen base weights (2b ships fp16)");
  }
  void validate() const {
    CVX_CHECK_AS(ConfigError, !path.empty(),
                 "path is required: the diffusers model folder (e.g. THUDM/CogVideoX-5b downloaded, or one made by "
                 "cvx_make_tiny)");
  }
};

}  // namespace cvx
