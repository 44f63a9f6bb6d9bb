// The T5 v1.1 encoder of CogVideoX (transformers 4.43 `T5EncoderModel`): RMS layer norms, gated-GELU
// (gelu_new) feed-forward, relative position bias from block 0 shared by every block, no attention
// scaling. Module names mirror the checkpoint keys (`shared`, `encoder.block.{i}.layer.0.SelfAttention.q`,
// `encoder.block.{i}.layer.1.DenseReluDense.wo`, `encoder.final_layer_norm`), so loading is a strict
// by-name copy. `encoder.embed_tokens` is `shared` (tied) and is not a separate parameter.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cvx/model/lora_linear.h"
#include "cvx/model/module_init.h"

namespace cvx {

// The fields of `text_encoder/config.json` the encoder uses, with transformers' T5Config defaults.
struct T5Config {
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "gated-gelu";  // transformers' default is "relu" (T5 v1.0, unsupported)

  int64_t inner_dim() const { return num_heads * d_kv; }
  nlohmann::json to_json() const;  // a transformers T5EncoderModel config.json
  // Throws FormatError naming `source` for a malformed or unsupported config.
  static T5Config from_json(const nlohmann::json& json, const std::string& source = "T5 config");
};

// Bucket of each relative position (key position - query position), as T5Attention computes it
// (exact below max_distance / 2^k boundaries, logarithmic above, with the same float32 arithmetic).
torch::Tensor t5_relative_position_bucket(const torch::Tensor& relative_position, bool bidirectional,
                                          int64_t num_buckets, int64_t max_distance);  // int64 -> int64

// T5LayerNorm: scale only, no mean subtraction; the variance is always computed in float32.
struct T5LayerNormImpl : torch::nn::Module {
  T5LayerNormImpl(int64_t dim, double eps, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [..., D] -> [..., D] in the weight's dtype (or float32)
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(T5LayerNorm);

// `SelfAttention`: no 1/sqrt(d) scaling (folded into the weights), additive position bias.
struct T5AttentionImpl : torch::nn::Module {
  T5AttentionImpl(const T5Config& config, bool has_relative_attention_bias, const ModuleInit& init = {});
  // x [B, L, D], bias [1 or B, H, L, L] -> [B, L, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);
  torch::Tensor compute_bias(int64_t query_length, int64_t key_length);  // [1, H, Lq, Lk]
  T5Config config;
  LoRALinear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};  // bias-free linear layers
  torch::nn::Embedding relative_attention_bias{nullptr};      // block 0 only
};
TORCH_MODULE(T5Attention);

// `layer.0`: pre-norm self-attention with a residual connection.
struct T5LayerSelfAttentionImpl : torch::nn::Module {
  T5LayerSelfAttentionImpl(const T5Config& config, bool has_relative_attention_bias, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);  // [B, L, D] -> [B, L, D]
  T5Attention SelfAttention{nullptr};
  T5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(T5LayerSelfAttention);

// `DenseReluDense`: wo(gelu_new(wi_0 x) * wi_1 x). `wo` may be kept in float32 under a float16 model
// (transformers' _keep_in_fp32_modules); its output then promotes the residual stream to float32.
struct T5DenseGatedActDenseImpl : torch::nn::Module {
  explicit T5DenseGatedActDenseImpl(const T5Config& config, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, L, D] -> [B, L, D] in wo's dtype
  LoRALinear wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
};
TORCH_MODULE(T5DenseGatedActDense);

// `layer.1`: pre-norm feed-forward with a residual connection.
struct T5LayerFFImpl : torch::nn::Module {
  explicit T5LayerFFImpl(const T5Config& config, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, L, D] -> [B, L, D]
  T5DenseGatedActDense DenseReluDense{nullptr};
  T5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(T5LayerFF);

// `encoder.block.{i}`.
struct T5BlockImpl : torch::nn::Module {
  T5BlockImpl(const T5Config& config, bool has_relative_attention_bias, const ModuleInit& init = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);  // [B, L, D] -> [B, L, D]
  T5LayerSelfAttention self_attention{nullptr};
  T5LayerFF feed_forward{nullptr};
  torch::nn::ModuleList layer{nullptr};  // [0] = self_attention, [1] = feed_forward
};
TORCH_MODULE(T5Block);

// `encoder` (T5Stack without its embedding).
struct T5StackImpl : torch::nn::Module {
  explicit T5StackImpl(const T5Config& config, const ModuleInit& init = {});
  // embeddings [B, L, D], attention_mask [B, L] or undefined -> [B, L, D]
  torch::Tensor forward(const torch::Tensor& embeddings, const torch::Tensor& attention_mask,
                        std::vector<torch::Tensor>* hidden_states);
  std::vector<T5Block> blocks;
  torch::nn::ModuleList block{nullptr};
  T5LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(T5Stack);

struct T5EncoderImpl : torch::nn::Module {
  explicit T5EncoderImpl(const T5Config& config, const ModuleInit& init = {});

  // input_ids [B, L] int64 -> last_hidden_state [B, L, D]. Without a mask (how the CogVideoX pipelines
  // call it) every position, padding included, attends to every other; with attention_mask [B, L]
  // (1 = token, 0 = padding) padded keys are masked out. `hidden_states`, when given, receives
  // transformers' output_hidden_states: the input of every block, then the final output.
  torch::Tensor forward(const torch::Tensor& input_ids, const std::optional<torch::Tensor>& attention_mask = {},
                        std::vector<torch::Tensor>* hidden_states = nullptr);
  torch::Dtype dtype() const;  // of the embedding: the activations' dtype
  torch::Device device() const;

  T5Config config;
  torch::nn::Embedding shared{nullptr};
  T5Stack encoder{nullptr};
};
TORCH_MODULE(T5Encoder);

// An encoder in init's dtype and device, randomly initialised or unmaterialised (see
// load_t5_encoder for float16).
T5Encoder make_t5_encoder(const T5Config& config, const ModuleInit& init = {});

// Loads `text_encoder/` of a diffusers folder (transformers layout: config.json + model.safetensors,
// single or sharded) strictly in `dtype` (float32, bfloat16 or float16). The embedding may be stored
// as `shared.weight`, `encoder.embed_tokens.weight` or both; `decoder.*` and `lm_head.*` are ignored
// (with a log line). Under float16 the `wo` projections stay float32, as transformers keeps them.
T5Encoder load_t5_encoder(const std::filesystem::path& dir, torch::Dtype dtype = torch::kBFloat16,
                          torch::Device device = torch::kCPU);

}  // namespace cvx
