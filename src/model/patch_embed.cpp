#include "cvx/core/error.h"
#include "cvx/model/transformer.h"

namespace cvx {

PatchEmbedImpl::PatchEmbedImpl(const TransformerConfig& c, const ModuleInit& init) : config(c) {
  const int64_t dim = c.inner_dim(), p = c.patch_size;
  if (c.patch_size_t) {
    // The 1.5 projection is a Linear built with bias whatever patch_bias says (the checkpoints carry it).
    proj_linear = register_module("proj", LoRALinear(c.in_channels * *c.patch_size_t * p * p, dim, true, init));
  } else {
    proj_conv = register_module(
        "proj",
        adopt(torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, dim, p).stride(p).bias(c.patch_bias)), init));
  }
  text_proj = register_module("text_proj", LoRALinear(c.text_embed_dim, dim, true, init));
  if (c.use_learned_positional_embeddings) {
    const int64_t grid_h = c.sample_height / p, grid_w = c.sample_width / p;
    const int64_t frames = (c.sample_frames - 1) / c.temporal_compression_ratio + 1;
    const int64_t tokens = c.max_text_seq_length + frames * grid_h * grid_w;
    pos_embedding = register_buffer("pos_embedding", new_parameter({1, tokens, dim}, init));
    if (init.materialize) pos_embedding.zero_();
  }
}

torch::Tensor PatchEmbedImpl::sincos_table(int64_t frames, int64_t grid_h, int64_t grid_w) {
  const auto key = std::make_tuple(frames, grid_h, grid_w);
  auto it = sincos_cache_.find(key);
  if (it == sincos_cache_.end()) {
    // [T, H'W', D] float64; the video rows of the joint table (the text rows are zero).
    auto table = sincos_pos_embed_3d(config.inner_dim(), grid_h, grid_w, frames, config.spatial_interpolation_scale,
                                     config.temporal_interpolation_scale);
    it = sincos_cache_.emplace(key, table.flatten(0, 1).unsqueeze(0)).first;
  }
  return it->second;
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& text, const torch::Tensor& video) {
  CVX_CHECK(video.dim() == 5, "patch_embed: expected latents [B, T, C, H, W], got ", video.sizes());
  const int64_t batch = video.size(0), frames = video.size(1), channels = video.size(2);
  const int64_t height = video.size(3), width = video.size(4), p = config.patch_size;
  CVX_CHECK(channels == config.in_channels, "patch_embed: latents have ", channels, " channels, the model expects ",
            config.in_channels);
  CVX_CHECK(height % p == 0 && width % p == 0, "patch_embed: latent size ", height, "x", width,
            " is not divisible by the patch size ", p);
  const auto text_tokens = text_proj->forward(text);  // [B, L, D]
  torch::Tensor video_tokens;                         // [B, N, D]
  if (config.patch_size_t) {
    const int64_t pt = *config.patch_size_t;
    CVX_CHECK(frames % pt == 0, "patch_embed: ", frames, " latent frames are not divisible by patch_size_t ", pt,
              " (1.5 models need an even count: pad the first frame as the pipeline and trainer do)");
    auto x = video.permute({0, 1, 3, 4, 2})
                 .reshape({batch, frames / pt, pt, height / p, p, width / p, p, channels})
                 .permute({0, 1, 3, 5, 7, 2, 4, 6})
                 .flatten(4, 7)
                 .flatten(1, 3);
    video_tokens = proj_linear->forward(x);
  } else {
    auto x = proj_conv->forward(video.reshape({batch * frames, channels, height, width}));
    video_tokens = x.view({batch, frames, x.size(1), x.size(2), x.size(3)}).flatten(3).transpose(2, 3).flatten(1, 2);
  }
  auto embeds = torch::cat({text_tokens, video_tokens}, 1).contiguous();
  const bool sincos = !config.use_rotary_positional_embeddings;
  if (sincos || config.use_learned_positional_embeddings) {
    const int64_t text_len = text.size(1);
    const int64_t pixel_frames = (frames - 1) * config.temporal_compression_ratio + 1;
    if (config.use_learned_positional_embeddings) {
      CVX_CHECK(height == config.sample_height && width == config.sample_width,
                "patch_embed: this model has a learned ", "positional table for latents of ", config.sample_height, "x",
                config.sample_width, "; got ", height, "x", width,
                " (a different resolution is not possible with this model)");
    }
    if (config.use_learned_positional_embeddings && pixel_frames == config.sample_frames) {
      CVX_CHECK(text_len + video_tokens.size(1) == pos_embedding.size(1), "patch_embed: the learned positional table ",
                "covers ", pos_embedding.size(1), " tokens but the input has ", text_len, " text + ",
                video_tokens.size(1), " video tokens (the text length must be ", config.max_text_seq_length, ")");
      embeds = embeds + pos_embedding.to(embeds.scalar_type());
    } else {
      // 2b, or 5b-I2V at another frame count (diffusers then falls back to the sin-cos table).
      const auto table = sincos_table(frames, height / p, width / p).to(embeds.device(), embeds.scalar_type());
      embeds = torch::cat({embeds.narrow(1, 0, text_len), embeds.narrow(1, text_len, table.size(1)) + table}, 1);
    }
  }
  return embeds;
}

}  // namespace cvx
