// Tiny random VAEs in the diffusers folder layout, for tests and demos.
#include "cvx/io/model_folder.h"
#include "cvx/model/vae.h"

namespace cvx {

AutoencoderKLCogVideoX make_tiny_vae(uint64_t seed, const std::string& variant) {
  torch::manual_seed(seed);
  auto model = AutoencoderKLCogVideoX(tiny_vae(variant));
  // Like the golden set: 1-D parameters randomised on top of the default init (norm scales around
  // 1, biases around 0), so ignoring or mis-loading any of them changes the outputs.
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (item.value().dim() != 1) continue;
    const auto& key = item.key();
    const bool scale =
        key.find("norm") != std::string::npos && key.size() > 7 && key.rfind(".weight") == key.size() - 7;
    item.value().normal_(scale ? 1.0 : 0.0, 0.1);
  }
  return model;
}

void write_tiny_vae(const std::filesystem::path& dir, uint64_t seed, const std::string& variant) {
  auto model = make_tiny_vae(seed, variant);
  save_component(dir, model->config.to_json(), module_state(*model));
}

}  // namespace cvx
