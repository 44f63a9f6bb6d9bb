// CogVideoXTransformer3DModel: module names mirror the diffusers checkpoint keys one to one
// (`transformer_blocks.{i}.attn1.to_q`, `norm1.linear`, `ff.net.0.proj`, ...), so loading is a
// strict by-name copy. Every linear layer is a LoRALinear, so LoRA can target any of them.
#pragma once
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cvx/core/sharding_unit.h"
#include "cvx/model/attention.h"
#include "cvx/model/embeddings.h"
#include "cvx/model/lora_linear.h"
#include "cvx/model/module_init.h"
#include "cvx/model/transformer_config.h"

namespace cvx {

// Named intermediates of one forward pass (golden tests compare them with the reference).
struct TransformerTrace {
  std::map<std::string, torch::Tensor> tensors;
  void record(const std::string& name, const torch::Tensor& t) { tensors[name] = t.detach().clone(); }
};

// `time_embedding` / `ofs_embedding`: linear_2(SiLU(linear_1(x))).
struct TimestepEmbeddingImpl : torch::nn::Module {
  TimestepEmbeddingImpl(int64_t in_features, int64_t time_embed_dim, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, in] -> [B, E]
  LoRALinear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// `norm1` / `norm2` (CogVideoXLayerNormZero): one LayerNorm, separate modulation of video and text.
struct LayerNormZeroImpl : torch::nn::Module {
  LayerNormZeroImpl(int64_t conditioning_dim, int64_t dim, double eps, const ModuleInit& init = {});
  struct Output {
    torch::Tensor hidden, encoder, gate, encoder_gate;  // [B, N, D], [B, L, D], [B, 1, D], [B, 1, D]
  };
  Output forward(const torch::Tensor& hidden, const torch::Tensor& encoder, const torch::Tensor& temb);
  LoRALinear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(LayerNormZero);

// `attn1`: joint self-attention over [text; video] with q/k LayerNorm and RoPE on video tokens.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t num_heads, int64_t head_dim, bool bias, const ModuleInit& init = {});
  // hidden [B, N, D], encoder [B, L, D] -> (video [B, N, D], text [B, L, D])
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& hidden, const torch::Tensor& encoder,
                                                  const RotaryEmbedding* rope);
  int64_t num_heads, head_dim;
  AttentionRunner runner;  // empty: scaled_dot_product_attention (see attention.h)
  torch::nn::LayerNorm norm_q{nullptr}, norm_k{nullptr};
  LoRALinear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out_0{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [0] = to_out_0, [1] = dropout (no parameters)
};
TORCH_MODULE(Attention);

// `ff.net.0` (GELU with its projection).
struct GeluProjectionImpl : torch::nn::Module {
  GeluProjectionImpl(int64_t in_features, int64_t out_features, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);
  LoRALinear proj{nullptr};
};
TORCH_MODULE(GeluProjection);

// `ff`: net.2(GELU_tanh(net.0.proj(x))).
struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(int64_t dim, int64_t inner_dim, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);
  GeluProjection net_0{nullptr};
  LoRALinear net_2{nullptr};
  torch::nn::ModuleList net{nullptr};
};
TORCH_MODULE(FeedForward);

// `transformer_blocks.{i}`: the sharding and checkpointing unit.
struct TransformerBlockImpl : torch::nn::Module {
  TransformerBlockImpl(const TransformerConfig& config, const ModuleInit& init = {});
  // hidden [B, N, D], encoder [B, L, D], temb [B, E] -> (hidden, encoder)
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& hidden, const torch::Tensor& encoder,
                                                  const torch::Tensor& temb, const RotaryEmbedding* rope);
  LayerNormZero norm1{nullptr}, norm2{nullptr};
  Attention attn1{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(TransformerBlock);

// `patch_embed` (CogVideoXPatchEmbed).
struct PatchEmbedImpl : torch::nn::Module {
  explicit PatchEmbedImpl(const TransformerConfig& config, const ModuleInit& init = {});
  // video [B, T, C, H, W], text [B, L, Tx] -> [B, L + N, D] (text first), positional table added
  torch::Tensor forward(const torch::Tensor& text, const torch::Tensor& video);
  TransformerConfig config;
  torch::nn::Conv2d proj_conv{nullptr};  // 1.0: `proj` is a Conv2d over p x p patches
  LoRALinear proj_linear{nullptr};       // 1.5: `proj` is a Linear over pt x p x p x C patches
  LoRALinear text_proj{nullptr};
  torch::Tensor pos_embedding;  // 5b-I2V: learned, persistent [1, L + N, D]
 private:
  torch::Tensor sincos_table(int64_t frames, int64_t grid_h, int64_t grid_w);  // [1, L + N, D] float64, cached
  std::map<std::tuple<int64_t, int64_t, int64_t>, torch::Tensor> sincos_cache_;
};
TORCH_MODULE(PatchEmbed);

// `norm_out` (AdaLayerNorm): shift then scale, both from temb.
struct AdaLayerNormImpl : torch::nn::Module {
  AdaLayerNormImpl(int64_t conditioning_dim, int64_t dim, double eps, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb);
  LoRALinear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(AdaLayerNorm);

// Video tokens [offset, offset + length) of the patchified sequence (order: latent frame, row,
// column); length -1: all of them.
struct VideoTokenSlice {
  int64_t offset = 0, length = -1;
};

struct CogVideoXTransformerImpl : torch::nn::Module {
  // Parameters in init.dtype on init.device, initialised or unmaterialised (load_state or the
  // sharding engine fills them); init.dtype is the compute dtype.
  explicit CogVideoXTransformerImpl(const TransformerConfig& config, const ModuleInit& init = {});

  // hidden_states [B, T, Cin, H, W] latents, encoder_hidden_states [B, L, Tx], timestep [B],
  // ofs [1] or [B] (1.5-I2V), rope tables for the video tokens (RoPE variants) -> [B, T, Cout, H, W]
  torch::Tensor forward(const torch::Tensor& hidden_states, const torch::Tensor& encoder_hidden_states,
                        const torch::Tensor& timestep, const std::optional<torch::Tensor>& ofs = std::nullopt,
                        const RotaryEmbedding* rope = nullptr, TransformerTrace* trace = nullptr);

  // What sequence parallelism runs on each rank of a sequence group: the forward above computing
  // only the video tokens of `slice` (the text tokens and the timestep embedding in full; the
  // patch embedding of the whole latents, then cut), with `rope` the tables of ALL video tokens
  // (cut here) -> the slice's outputs [B, length, K] before unpatchifying (K = pt p p Cout).
  // Attention over the other ranks' tokens is the attention runner's job.
  torch::Tensor forward_tokens(const torch::Tensor& hidden_states, const torch::Tensor& encoder_hidden_states,
                               const torch::Tensor& timestep, const std::optional<torch::Tensor>& ofs = std::nullopt,
                               const RotaryEmbedding* rope = nullptr, VideoTokenSlice slice = {},
                               TransformerTrace* trace = nullptr);
  // tokens [B, N, K] of latents [B, T, C, H, W] -> [B, T, Cout, H, W] (forward = unpatchify of all tokens).
  torch::Tensor unpatchify(const torch::Tensor& tokens, int64_t frames, int64_t height, int64_t width) const;
  // The inverse: x [B, T, Cout, H, W] -> [B, N, K] in the token order of forward_tokens (a loss
  // on a slice of the tokens compares like with like).
  torch::Tensor patchify(const torch::Tensor& x) const;
  // The attention core of every block (attention.h); an empty runner restores the default.
  void set_attention_runner(const AttentionRunner& runner);

  // Recompute each block in backward instead of keeping its activations (the default runner).
  void set_gradient_checkpointing(bool enabled) { gradient_checkpointing_ = enabled; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  // The seam for a sharding engine (which this model knows nothing of). Every block runs as
  // runner(i, block i's function, {hidden, encoder, temb}) -> {hidden, encoder}, with and without
  // gradients; an empty runner restores the default (direct, or checkpointed when enabled).
  void set_block_runner(UnitRunner runner) { block_runner_ = std::move(runner); }
  // Every unit: the root (patch and time embeddings, norm_final, norm_out, proj_out; runner index
  // -1) first, then transformer_blocks.{i} (runner index i). Together they hold every parameter
  // and buffer exactly once, under its checkpoint key. Call after adapters are added.
  std::vector<ShardingUnit> sharding_units();

  // The dtype activations are computed in. Held explicitly, not read off a weight: under a
  // mixed-precision policy the weights the model sees may be views in another dtype's buffers.
  torch::Dtype dtype() const { return compute_dtype_; }
  void set_compute_dtype(torch::Dtype dtype) { compute_dtype_ = dtype; }
  // Module::to, keeping the compute dtype in step.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  TransformerConfig config;
  PatchEmbed patch_embed{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  TimestepEmbedding ofs_embedding{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
  torch::nn::LayerNorm norm_final{nullptr};
  AdaLayerNorm norm_out{nullptr};
  LoRALinear proj_out{nullptr};

 private:
  bool gradient_checkpointing_ = false;
  UnitRunner block_runner_;
  torch::Dtype compute_dtype_ = torch::kFloat32;
};
TORCH_MODULE(CogVideoXTransformer);

// Rotary tables exactly as the diffusers pipelines build them for a video of height x width
// pixels and `latent_frames` latent frames: the "linspace" crop-region grid for 1.0 models and
// the "slice" grid (max size from the config) for 1.5. Undefined tensors for 2b (no RoPE).
RotaryEmbedding pipeline_rotary_embedding(const TransformerConfig& config, int64_t height, int64_t width,
                                          int64_t latent_frames, int64_t vae_scale_factor_spatial = 8);
// Rotary tables as the official fine-tuning code builds them: "slice" grid with max size equal to
// the latent grid (identical to the pipeline's for 1.5; 1.0 training uses it too).
RotaryEmbedding training_rotary_embedding(const TransformerConfig& config, int64_t latent_height, int64_t latent_width,
                                          int64_t latent_frames);

// Loads `transformer/` of a diffusers folder (config.json + single or sharded safetensors),
// strictly, in `dtype` on `device`.
CogVideoXTransformer load_transformer(const std::filesystem::path& dir, torch::Dtype dtype = torch::kFloat32,
                                      torch::Device device = torch::kCPU);

}  // namespace cvx
