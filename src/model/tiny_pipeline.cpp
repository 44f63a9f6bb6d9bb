#include "cvx/model/tiny_pipeline.h"

#include "cvx/core/error.h"
#include "cvx/diffusion/scheduler.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/prompt_encoder.h"
#include "cvx/model/vae.h"

namespace cvx {

CogVideoXTransformer make_tiny_transformer(const std::string& variant, uint64_t seed) {
  torch::manual_seed(seed);
  auto model = CogVideoXTransformer(tiny_transformer(variant));
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (item.value().dim() == 1) item.value().normal_(item.key().size() % 2 ? 1.0 : 0.0, 0.1);
  }
  if (model->patch_embed->pos_embedding.defined()) {
    // Like diffusers: the learned table starts from the sin-cos recipe; text rows trained away from 0.
    const auto& c = model->config;
    const int64_t frames = (c.sample_frames - 1) / c.temporal_compression_ratio + 1;
    const auto table = sincos_pos_embed_3d(c.inner_dim(), c.sample_height / c.patch_size, c.sample_width / c.patch_size,
                                           frames, c.spatial_interpolation_scale, c.temporal_interpolation_scale);
    auto& pos = model->patch_embed->pos_embedding;
    pos.normal_(0.0, 0.02);
    pos.narrow(1, c.max_text_seq_length, table.size(0) * table.size(1)).add_(table.flatten(0, 1).to(pos.dtype()));
  }
  return model;
}

void write_tiny_pipeline(const std::filesystem::path& dir, const std::string& variant, uint64_t seed) {
  auto model = make_tiny_transformer(variant, seed);
  std::filesystem::create_directories(dir);
  save_component(dir / "transformer", model->config.to_json(), module_state(*model));
  write_tiny_vae(dir / "vae", seed, variant);
  nlohmann::json index;
  index["_class_name"] = model->config.is_i2v() ? "CogVideoXImageToVideoPipeline" : "CogVideoXPipeline";
  index["_diffusers_version"] = "0.32.2";
  index["transformer"] = {"diffusers", "CogVideoXTransformer3DModel"};
  index["vae"] = {"diffusers", "AutoencoderKLCogVideoX"};
  // The released scheduler configurations: 2b shifts the SNR by 3, every 5b-class model by 1.
  const auto scheduler = variant == kVariant2b ? scheduler_config_2b() : scheduler_config_5b();
  std::filesystem::create_directories(dir / "scheduler");
  write_json_file(dir / "scheduler" / "scheduler_config.json", scheduler.to_json());
  index["scheduler"] = {"diffusers", scheduler.class_name};
  index.update(write_tiny_text_encoder(dir, seed, model->config.text_embed_dim));
  write_json_file(dir / "model_index.json", index);
}

}  // namespace cvx
