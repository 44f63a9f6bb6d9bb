#include "cvx/model/transformer.h"

#include "cvx/core/error.h"
#include "cvx/core/recompute.h"
#include "cvx/io/model_folder.h"

namespace cvx {

AdaLayerNormImpl::AdaLayerNormImpl(int64_t conditioning_dim, int64_t dim, double eps, const ModuleInit& init) {
  linear = register_module("linear", LoRALinear(conditioning_dim, 2 * dim, true, init));
  norm = register_module("norm", adopt(torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)), init));
}

torch::Tensor AdaLayerNormImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  // Unlike the blocks' modulation, shift comes first here.
  const auto chunks = linear->forward(torch::silu(temb)).unsqueeze(1).chunk(2, 2);
  return norm->forward(x) * (1 + chunks[1]) + chunks[0];
}

CogVideoXTransformerImpl::CogVideoXTransformerImpl(const TransformerConfig& c, const ModuleInit& init)
    : config(c), compute_dtype_(init.dtype) {
  config.validate();
  const int64_t dim = c.inner_dim();
  patch_embed = register_module("patch_embed", PatchEmbed(c, init));
  time_embedding = register_module("time_embedding", TimestepEmbedding(dim, c.time_embed_dim, init));
  if (c.ofs_embed_dim)
    ofs_embedding = register_module("ofs_embedding", TimestepEmbedding(*c.ofs_embed_dim, c.time_embed_dim, init));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) transformer_blocks->push_back(TransformerBlock(c, init));
  norm_final = register_module("norm_final",
                               adopt(torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(c.norm_eps)), init));
  norm_out = register_module("norm_out", AdaLayerNorm(c.time_embed_dim, dim, c.norm_eps, init));
  const int64_t patch_volume = c.patch_size * c.patch_size * c.patch_size_t.value_or(1);
  proj_out = register_module("proj_out", LoRALinear(dim, patch_volume * c.out_channels, true, init));
}

std::vector<ShardingUnit> CogVideoXTransformerImpl::sharding_units() {
  std::vector<ShardingUnit> units(1);
  units[0].module = this;  // locking the whole model covers the blocks too
  auto add = [](ShardingUnit& unit, const std::string& prefix, const torch::nn::Module& m, bool recurse) {
    for (const auto& p : m.named_parameters(recurse)) unit.parameters.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : m.named_buffers(recurse)) unit.buffers.emplace_back(prefix + b.key(), b.value());
  };
  add(units[0], "", *this, /*recurse=*/false);
  for (const auto& child : named_children())
    if (child.key() != "transformer_blocks") add(units[0], child.key() + ".", *child.value(), true);
  for (size_t i = 0; i < transformer_blocks->size(); ++i) {
    ShardingUnit unit;
    unit.name = "transformer_blocks." + std::to_string(i);
    unit.runner_index = static_cast<int64_t>(i);
    unit.module = (*transformer_blocks)[i].get();
    add(unit, unit.name + ".", *(*transformer_blocks)[i], true);
    units.push_back(std::move(unit));
  }
  return units;
}

void CogVideoXTransformerImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  compute_dtype_ = dtype;
}

void CogVideoXTransformerImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  compute_dtype_ = dtype;
}

void CogVideoXTransformerImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

torch::Tensor CogVideoXTransformerImpl::forward(const torch::Tensor& hidden_states,
                                                const torch::Tensor& encoder_hidden_states,
                                                const torch::Tensor& timestep, const std::optional<torch::Tensor>& ofs,
                                                const RotaryEmbedding* rope, TransformerTrace* trace) {
  const auto tokens = forward_tokens(hidden_states, encoder_hidden_states, timestep, ofs, rope, {}, trace);
  return unpatchify(tokens, hidden_states.size(1), hidden_states.size(3), hidden_states.size(4));
}

void CogVideoXTransformerImpl::set_attention_runner(const AttentionRunner& runner) {
  for (size_t i = 0; i < transformer_blocks->size(); ++i)
    transformer_blocks->ptr<TransformerBlockImpl>(i)->attn1->runner = runner;
}

torch::Tensor CogVideoXTransformerImpl::forward_tokens(const torch::Tensor& hidden_states,
                                                       const torch::Tensor& encoder_hidden_states,
                                                       const torch::Tensor& timestep,
                                                       const std::optional<torch::Tensor>& ofs,
                                                       const RotaryEmbedding* rope, VideoTokenSlice slice,
                                                       TransformerTrace* trace) {
  CVX_CHECK(hidden_states.dim() == 5, "transformer: expected latents [B, T, C, H, W], got ", hidden_states.sizes());
  CVX_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(2) == config.text_embed_dim,
            "transformer: expected text embeddings [B, L, ", config.text_embed_dim, "], got ",
            encoder_hidden_states.sizes());
  CVX_CHECK(
      config.use_rotary_positional_embeddings == (rope != nullptr && rope->cos.defined()), "transformer: ",
      config.use_rotary_positional_embeddings ? "this model needs rotary tables" : "this model takes no rotary tables");
  CVX_CHECK(!config.ofs_embed_dim || ofs.has_value(), "transformer: this model (1.5-I2V) needs ofs");
  const auto model_dtype = dtype();
  const int64_t text_len = encoder_hidden_states.size(1);

  // Timestep (and ofs) embedding: the sinusoid is float32, then cast to the model dtype.
  const auto t_proj = timestep_embedding(timestep.to(hidden_states.device()).reshape({-1}), config.inner_dim(),
                                         config.flip_sin_to_cos, static_cast<double>(config.freq_shift));
  auto temb = time_embedding->forward(t_proj.to(model_dtype));  // [B, E]
  if (trace) {
    trace->record("time_proj", t_proj);
    trace->record("time_embedding", temb);
  }
  if (config.ofs_embed_dim) {
    const auto o_proj = timestep_embedding(ofs->to(hidden_states.device()).reshape({-1}), *config.ofs_embed_dim,
                                           config.flip_sin_to_cos, static_cast<double>(config.freq_shift));
    const auto o_emb = ofs_embedding->forward(o_proj.to(model_dtype));
    if (trace) {
      trace->record("ofs_proj", o_proj);
      trace->record("ofs_embedding", o_emb);
    }
    temb = temb + o_emb;
  }

  const auto seq = patch_embed->forward(encoder_hidden_states.to(model_dtype), hidden_states.to(model_dtype));
  if (trace) trace->record("patch_embed", seq);
  const int64_t num_video = seq.size(1) - text_len;
  if (slice.length < 0) slice = {0, num_video};
  CVX_CHECK(slice.offset >= 0 && slice.offset + slice.length <= num_video, "transformer: video tokens [", slice.offset,
            ", ", slice.offset + slice.length, ") of ", num_video);
  auto encoder = seq.narrow(1, 0, text_len);
  auto hidden = seq.narrow(1, text_len + slice.offset, slice.length);

  RotaryEmbedding rope_copy = rope ? *rope : RotaryEmbedding{};
  if (rope_copy.cos.defined() && slice.length != num_video) {
    CVX_CHECK(rope_copy.cos.size(0) == num_video, "transformer: rotary tables for ", rope_copy.cos.size(0),
              " tokens, the latents have ", num_video);
    rope_copy = {rope_copy.cos.narrow(0, slice.offset, slice.length),
                 rope_copy.sin.narrow(0, slice.offset, slice.length)};
  }
  const bool has_rope = rope != nullptr;
  for (int64_t i = 0; i < static_cast<int64_t>(transformer_blocks->size()); ++i) {
    auto block = transformer_blocks->ptr<TransformerBlockImpl>(i);
    // Captures by value: a checkpointed or sharded run calls it again in backward, after forward returned.
    const UnitFn run = [block, rope_copy, has_rope](const torch::autograd::variable_list& in) {
      auto [h, e] = block->forward(in[0], in[1], in[2], has_rope ? &rope_copy : nullptr);
      return torch::autograd::variable_list{h, e};
    };
    const torch::autograd::variable_list inputs{hidden, encoder, temb};
    torch::autograd::variable_list outputs;
    if (block_runner_) {
      outputs = block_runner_(i, run, inputs);
    } else if (gradient_checkpointing_ && torch::GradMode::is_enabled()) {
      outputs = checkpoint(run, inputs, block->parameters());
    } else {
      outputs = run(inputs);
    }
    hidden = outputs.at(0);
    encoder = outputs.at(1);
    if (trace) {
      trace->record("block" + std::to_string(i) + ".hidden_states", hidden);
      trace->record("block" + std::to_string(i) + ".encoder_hidden_states", encoder);
    }
  }

  if (config.use_rotary_positional_embeddings) {
    // diffusers normalises [text; video] for RoPE models and keeps the video part (same per-token result).
    const auto joint = norm_final->forward(torch::cat({encoder, hidden}, 1));
    if (trace) trace->record("norm_final", joint);
    hidden = joint.narrow(1, text_len, joint.size(1) - text_len);
  } else {
    hidden = norm_final->forward(hidden);
    if (trace) trace->record("norm_final", hidden);
  }
  hidden = norm_out->forward(hidden, temb);
  if (trace) trace->record("norm_out", hidden);
  auto out = proj_out->forward(hidden);  // [B, N, K]
  if (trace) trace->record("proj_out", out);
  return out;
}

torch::Tensor CogVideoXTransformerImpl::patchify(const torch::Tensor& x) const {
  CVX_CHECK(x.dim() == 5 && x.size(2) == config.out_channels, "patchify: expected [B, T, ", config.out_channels,
            ", H, W], got ", x.sizes());
  const int64_t batch = x.size(0), frames = x.size(1), height = x.size(3), width = x.size(4);
  const int64_t p = config.patch_size, cout = config.out_channels;
  if (config.patch_size_t) {
    const int64_t pt = *config.patch_size_t;
    CVX_CHECK(frames % pt == 0, "patchify: ", frames, " frames are not a multiple of patch_size_t ", pt);
    // unpatchify's view [B, T/pt, H/p, W/p, C, pt, p, p] permuted (0, 1, 5, 4, 2, 6, 3, 7); here backwards.
    return x.reshape({batch, frames / pt, pt, cout, height / p, p, width / p, p})
        .permute({0, 1, 4, 6, 3, 2, 5, 7})
        .reshape({batch, (frames / pt) * (height / p) * (width / p), cout * pt * p * p});
  }
  // unpatchify's view [B, T, H/p, W/p, C, p, p] permuted (0, 1, 4, 2, 5, 3, 6); here backwards.
  return x.reshape({batch, frames, cout, height / p, p, width / p, p})
      .permute({0, 1, 3, 5, 2, 4, 6})
      .reshape({batch, frames * (height / p) * (width / p), cout * p * p});
}

torch::Tensor CogVideoXTransformerImpl::unpatchify(const torch::Tensor& tokens, int64_t frames, int64_t height,
                                                   int64_t width) const {
  const int64_t batch = tokens.size(0), p = config.patch_size, cout = config.out_channels;
  torch::Tensor out = tokens;
  if (config.patch_size_t) {
    const int64_t pt = *config.patch_size_t;
    out = out.reshape({batch, (frames + pt - 1) / pt, height / p, width / p, cout, pt, p, p})
              .permute({0, 1, 5, 4, 2, 6, 3, 7})
              .flatten(6, 7)
              .flatten(4, 5)
              .flatten(1, 2);
  } else {
    out = out.reshape({batch, frames, height / p, width / p, cout, p, p})
              .permute({0, 1, 4, 2, 5, 3, 6})
              .flatten(5, 6)
              .flatten(3, 4);
  }
  return out;  // [B, T, Cout, H, W]
}

RotaryEmbedding pipeline_rotary_embedding(const TransformerConfig& c, int64_t height, int64_t width,
                                          int64_t latent_frames, int64_t vae_scale_factor_spatial) {
  if (!c.use_rotary_positional_embeddings) return {};
  const int64_t p = c.patch_size;
  const int64_t grid_h = height / (vae_scale_factor_spatial * p), grid_w = width / (vae_scale_factor_spatial * p);
  const int64_t base_w = c.sample_width / p, base_h = c.sample_height / p;
  if (!c.patch_size_t) {
    const CropRegion crops = resize_crop_region_for_grid(grid_h, grid_w, base_w, base_h);
    return rotary_pos_embed_3d(c.attention_head_dim, crops, grid_h, grid_w, latent_frames, "linspace");
  }
  const int64_t pt = *c.patch_size_t;
  return rotary_pos_embed_3d(c.attention_head_dim, std::nullopt, grid_h, grid_w, (latent_frames + pt - 1) / pt, "slice",
                             std::make_pair(base_h, base_w));
}

RotaryEmbedding training_rotary_embedding(const TransformerConfig& c, int64_t latent_height, int64_t latent_width,
                                          int64_t latent_frames) {
  if (!c.use_rotary_positional_embeddings) return {};
  const int64_t grid_h = latent_height / c.patch_size, grid_w = latent_width / c.patch_size;
  const int64_t temporal = c.patch_size_t ? (latent_frames + *c.patch_size_t - 1) / *c.patch_size_t : latent_frames;
  return rotary_pos_embed_3d(c.attention_head_dim, std::nullopt, grid_h, grid_w, temporal, "slice",
                             std::make_pair(grid_h, grid_w));
}

CogVideoXTransformer load_transformer(const std::filesystem::path& dir, torch::Dtype dtype, torch::Device device) {
  return load_component_model<CogVideoXTransformer, TransformerConfig>(dir, dtype, device);
}

}  // namespace cvx
