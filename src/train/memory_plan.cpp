#include "cvx/train/memory_plan.h"

#include <filesystem>

#include "cvx/core/dtype_name.h"
#include "cvx/core/format_bytes.h"
#include "cvx/dist/fake_communicator.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/lora.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"

namespace cvx {

TransformerConfig resolve_transformer_config(const ModelConfig& model, std::string* source) {
  const std::filesystem::path config_file = std::filesystem::path(model.path) / "transformer" / "config.json";
  if (std::filesystem::exists(config_file)) {
    const ComponentFolder folder = open_component(config_file.parent_path());
    if (source) *source = config_file.string();
    return TransformerConfig::from_json(folder.config, config_file.string());
  }
  CVX_CHECK_AS(ConfigError, model.variant != "auto", "[model] path ", quote(model.path),
               " has no transformer/config.json and variant = auto: give the model folder, or set [model] variant (",
               released_variant_list(), ") to plan with the released configuration");
  if (source) *source = "the " + model.variant + " preset (no model folder at " + model.path + ")";
  return transformer_preset(model.variant);
}

FsdpOptions engine_options(const TrainRunConfig& config) {
  FsdpOptions o;
  o.strategy = parse_sharding_strategy(config.parallel.resolved_sharding());
  o.precision.param_dtype = parse_mixed_precision(config.train.mixed_precision, "[train] mixed_precision");
  o.precision.reduce_dtype = parse_dtype(config.parallel.reduce_dtype, "[parallel] reduce_dtype");
  o.recompute = config.train.gradient_checkpointing;
  o.prefetch = config.parallel.prefetch;
  return o;
}

std::vector<MemoryLine> activation_estimate(const TransformerConfig& c, const Resolution& r, int64_t batch,
                                            bool checkpointing, int compute_bytes, int64_t sequence_parallel) {
  const int64_t spatial = 8;  // VAE spatial compression of every released CogVideoX
  int64_t latent_frames = (r.frames - 1) / c.temporal_compression_ratio + 1;
  int64_t temporal_tokens = latent_frames;
  if (c.patch_size_t) {
    latent_frames += latent_frames % *c.patch_size_t;  // the first frame is repeated to make it even
    temporal_tokens = latent_frames / *c.patch_size_t;
  }
  const int64_t video = temporal_tokens * (r.height / spatial / c.patch_size) * (r.width / spatial / c.patch_size);
  // Sequence parallelism: a rank holds its slice of the video tokens (the largest, ceil(N / P)) and
  // every text token; the attention's head-split exchange buffers are the same size again.
  const int64_t local_video = (video + sequence_parallel - 1) / sequence_parallel;
  const int64_t tokens = local_video + c.max_text_seq_length, d = c.inner_dim(), layers = c.num_layers;
  const std::string s = std::to_string(tokens), b = std::to_string(batch), dd = std::to_string(d);
  const std::string cb = std::to_string(compute_bytes), l = std::to_string(layers);
  const uint64_t per_block = static_cast<uint64_t>(batch) * tokens * d;  // elements of one block's input
  const uint64_t live = per_block * 34 * compute_bytes / 2;
  std::vector<MemoryLine> out;
  if (checkpointing) {
    out.push_back({"activations: checkpointed block inputs",
                   "L x B x S x D x c = " + l + " x " + b + " x " + s + " x " + dd + " x " + cb,
                   per_block * layers * compute_bytes});
    out.push_back({"activations: one block in backward (estimate)",
                   "34 x B x S x D x c/2 = 34 x " + b + " x " + s + " x " + dd + " x " + cb + "/2", live});
  } else {
    out.push_back({"activations: every block (estimate)",
                   "L x 34 x B x S x D x c/2 = " + l + " x 34 x " + b + " x " + s + " x " + dd + " x " + cb + "/2",
                   live * layers});
  }
  return out;
}

std::string plan_memory_report(const TrainRunConfig& config, int world_size) {
  const TransformerConfig tc = resolve_transformer_config(config.model);
  const FsdpOptions planned = [&] {
    FsdpOptions o = engine_options(config);
    o.allocate = false;
    return o;
  }();
  const torch::Dtype dtype = *planned.precision.param_dtype;
  CogVideoXTransformer model(tc, ModuleInit::unmaterialized(dtype));
  if (config.train.training_type == "lora") {
    inject_lora(*model, config.lora, torch::kFloat32, /*materialize=*/false);
    mark_only_lora_trainable(*model);
  } else {
    for (auto& p : model->parameters()) p.set_requires_grad(true);
  }
  FakeCommunicator world(0, world_size);
  FsdpEngine engine(model->sharding_units(), world, planned, torch::kCPU);
  const Resolution resolution = config.data.resolution();
  const int compute_bytes = static_cast<int>(c10::elementSize(dtype));
  auto extra = activation_estimate(tc, resolution, config.train.batch_size, config.train.gradient_checkpointing,
                                   compute_bytes, config.parallel.sequence_parallel_size);
  if (tc.is_i2v() && config.train.image_latents == "encode") extra.push_back(i2v_encoder_line(config, tc, dtype));
  return format_memory_report(engine.memory(), planned, extra);
}

MemoryLine i2v_encoder_line(const TrainRunConfig& config, const TransformerConfig& transformer, torch::Dtype dtype) {
  const std::filesystem::path vae_config = std::filesystem::path(config.model.path) / "vae" / "config.json";
  const VAEConfig vc = std::filesystem::exists(vae_config)
                           ? VAEConfig::from_json(open_component(vae_config.parent_path()).config, vae_config.string())
                           : vae_preset(transformer.variant());
  // The trainer holds the encoder alone, unsharded, in the compute dtype (about 1.7% of a 5B
  // transformer: sharding it would cost a gather per step for little).
  AutoencoderKLCogVideoX vae(vc, ModuleInit::unmaterialized(dtype));
  int64_t numel = 0;
  for (const auto& p : vae->encoder->parameters()) numel += p.numel();
  for (const auto& b : vae->encoder->buffers()) numel += b.numel();
  const int64_t c = static_cast<int64_t>(c10::elementSize(dtype));
  return {"I2V VAE encoder (image_latents = encode)",
          std::to_string(c) + " B x Ψv = " + std::to_string(c) + " x " + grouped_digits(numel),
          static_cast<uint64_t>(c * numel)};
}

}  // namespace cvx
