#include "cvx/model/t5_encoder.h"

#include <cmath>
#include <limits>

#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"

namespace cvx {

// ---------------------------------------------------------------- config

namespace {
// The numeric fields once, for to_json and from_json alike.
template <class Config, class Visitor>
void visit_t5_fields(Config& c, Visitor&& v) {
  v("d_ff", c.d_ff);
  v("d_kv", c.d_kv);
  v("d_model", c.d_model);
  v("layer_norm_epsilon", c.layer_norm_epsilon);
  v("num_heads", c.num_heads);
  v("num_layers", c.num_layers);
  v("relative_attention_max_distance", c.relative_attention_max_distance);
  v("relative_attention_num_buckets", c.relative_attention_num_buckets);
  v("vocab_size", c.vocab_size);
}
}  // namespace

nlohmann::json T5Config::to_json() const {
  nlohmann::json j{{"architectures", {"T5EncoderModel"}},
                   {"dense_act_fn", "gelu_new"},
                   {"dropout_rate", 0.1},
                   {"eos_token_id", 1},
                   {"feed_forward_proj", feed_forward_proj},
                   {"is_encoder_decoder", true},
                   {"is_gated_act", true},
                   {"model_type", "t5"},
                   {"pad_token_id", 0},
                   {"tie_word_embeddings", false},
                   {"torch_dtype", "float32"},
                   {"transformers_version", "4.43.4"}};
  visit_t5_fields(*this, [&j](const char* key, const auto& field) { j[key] = field; });
  return j;
}

T5Config T5Config::from_json(const nlohmann::json& j, const std::string& source) {
  CVX_CHECK_AS(FormatError, j.is_object(), source, ": expected a JSON object");
  T5Config c;
  c.feed_forward_proj = "relu";  // transformers' default when the key is absent
  visit_t5_fields(c, [&](const char* key, auto& field) { read_json_field(j, key, field, source); });
  read_json_field(j, "feed_forward_proj", c.feed_forward_proj, source);
  // T5Config derives both from feed_forward_proj ("gated-gelu" -> gated gelu_new); explicit keys win.
  bool gated = c.feed_forward_proj.rfind("gated-", 0) == 0;
  std::string act =
      c.feed_forward_proj == "gated-gelu" ? "gelu_new" : c.feed_forward_proj.substr(c.feed_forward_proj.rfind('-') + 1);
  read_json_field(j, "is_gated_act", gated, source);
  read_json_field(j, "dense_act_fn", act, source);
  CVX_CHECK_AS(FormatError, gated && act == "gelu_new", source, ": feed_forward_proj '", c.feed_forward_proj, "' (",
               gated ? "gated " : "", act, ") is not supported: expected the T5 v1.1 gated-gelu (gelu_new)");
  CVX_CHECK_AS(FormatError,
               c.vocab_size > 0 && c.d_model > 0 && c.d_kv > 0 && c.d_ff > 0 && c.num_layers > 0 && c.num_heads > 0,
               source, ": vocab_size, d_model, d_kv, d_ff, num_layers and num_heads must be positive");
  CVX_CHECK_AS(FormatError, c.relative_attention_num_buckets >= 4 && c.relative_attention_max_distance > 0, source,
               ": relative_attention_num_buckets must be at least 4 and relative_attention_max_distance positive");
  return c;
}

// ---------------------------------------------------------------- layers

torch::Tensor t5_relative_position_bucket(const torch::Tensor& relative_position, bool bidirectional,
                                          int64_t num_buckets, int64_t max_distance) {
  // The same ops in the same order as transformers: the float32 log decides the bucket boundaries.
  auto buckets = torch::zeros_like(relative_position);
  torch::Tensor n;
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (relative_position > 0).to(torch::kLong) * num_buckets;
    n = relative_position.abs();
  } else {
    n = -torch::min(relative_position, torch::zeros_like(relative_position));
  }
  const int64_t max_exact = num_buckets / 2;
  auto large = max_exact + (torch::log(n.to(torch::kFloat) / max_exact) /
                            std::log(static_cast<double>(max_distance) / max_exact) * (num_buckets - max_exact))
                               .to(torch::kLong);
  large = torch::min(large, torch::full_like(large, num_buckets - 1));
  return buckets + torch::where(n < max_exact, n, large);
}

T5LayerNormImpl::T5LayerNormImpl(int64_t dim, double eps, const ModuleInit& init) : eps(eps) {
  weight = register_parameter("weight", new_parameter({dim}, init));
  if (init.materialize) {
    torch::NoGradGuard no_grad;
    weight.fill_(1.0);
  }
}

torch::Tensor T5LayerNormImpl::forward(const torch::Tensor& x) {
  const auto variance = x.to(torch::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  auto y = x * torch::rsqrt(variance + eps);  // float32 by promotion
  if (weight.scalar_type() == torch::kHalf || weight.scalar_type() == torch::kBFloat16) y = y.to(weight.scalar_type());
  return weight * y;
}

T5AttentionImpl::T5AttentionImpl(const T5Config& c, bool has_relative_attention_bias, const ModuleInit& init)
    : config(c) {
  auto linear = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, LoRALinear(in, out, /*with_bias=*/false, init));
  };
  q = linear("q", c.d_model, c.inner_dim());
  k = linear("k", c.d_model, c.inner_dim());
  v = linear("v", c.d_model, c.inner_dim());
  o = linear("o", c.inner_dim(), c.d_model);
  if (has_relative_attention_bias) {
    relative_attention_bias = register_module(
        "relative_attention_bias", adopt(torch::nn::Embedding(c.relative_attention_num_buckets, c.num_heads), init));
  }
}

torch::Tensor T5AttentionImpl::compute_bias(int64_t query_length, int64_t key_length) {
  CVX_CHECK(!relative_attention_bias.is_empty(), "only the first T5 block has a relative attention bias");
  const auto options = torch::TensorOptions(torch::kLong).device(relative_attention_bias->weight.device());
  const auto relative =
      torch::arange(key_length, options).unsqueeze(0) - torch::arange(query_length, options).unsqueeze(1);
  const auto buckets = t5_relative_position_bucket(
      relative, /*bidirectional=*/true, config.relative_attention_num_buckets, config.relative_attention_max_distance);
  return relative_attention_bias(buckets).permute({2, 0, 1}).unsqueeze(0);
}

torch::Tensor T5AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const int64_t batch = x.size(0);
  auto heads = [&](const torch::Tensor& t) {  // [B, L, H * d] -> [B, H, L, d]
    return t.view({batch, -1, config.num_heads, config.d_kv}).transpose(1, 2);
  };
  auto scores = torch::matmul(heads(q(x)), heads(k(x)).transpose(3, 2));
  scores += bias;
  const auto weights = torch::softmax(scores.to(torch::kFloat), -1).to(scores.scalar_type());
  const auto out =
      torch::matmul(weights, heads(v(x))).transpose(1, 2).contiguous().view({batch, -1, config.inner_dim()});
  return o(out);
}

T5LayerSelfAttentionImpl::T5LayerSelfAttentionImpl(const T5Config& c, bool has_relative_attention_bias,
                                                   const ModuleInit& init) {
  SelfAttention = register_module("SelfAttention", T5Attention(c, has_relative_attention_bias, init));
  layer_norm = register_module("layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon, init));
}

torch::Tensor T5LayerSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  return x + SelfAttention(layer_norm(x), bias);
}

T5DenseGatedActDenseImpl::T5DenseGatedActDenseImpl(const T5Config& c, const ModuleInit& init) {
  auto linear = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, LoRALinear(in, out, /*with_bias=*/false, init));
  };
  wi_0 = linear("wi_0", c.d_model, c.d_ff);
  wi_1 = linear("wi_1", c.d_model, c.d_ff);
  wo = linear("wo", c.d_ff, c.d_model);
}

torch::Tensor T5DenseGatedActDenseImpl::forward(const torch::Tensor& x) {
  // gelu_new written out as transformers does (not gelu(approximate="tanh"), which is not bit-identical).
  const auto g = wi_0(x);
  const auto gelu = 0.5 * g * (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) * (g + 0.044715 * torch::pow(g, 3.0))));
  auto h = gelu * wi_1(x);
  if (h.scalar_type() != wo->weight.scalar_type()) h = h.to(wo->weight.scalar_type());
  return wo(h);
}

T5LayerFFImpl::T5LayerFFImpl(const T5Config& c, const ModuleInit& init) {
  DenseReluDense = register_module("DenseReluDense", T5DenseGatedActDense(c, init));
  layer_norm = register_module("layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon, init));
}

torch::Tensor T5LayerFFImpl::forward(const torch::Tensor& x) { return x + DenseReluDense(layer_norm(x)); }

namespace {

// float16 only: transformers clamps the residual stream to stay finite.
torch::Tensor clamp_half(const torch::Tensor& x) {
  if (x.scalar_type() != torch::kHalf) return x;
  const double max = 65504.0;
  const double limit = torch::isinf(x).any().item<bool>() ? max - 1000 : max;
  return torch::clamp(x, -limit, limit);
}

double lowest_value(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat: return std::numeric_limits<float>::lowest();
    case torch::kDouble: return std::numeric_limits<double>::lowest();
    case torch::kBFloat16: return static_cast<float>(std::numeric_limits<c10::BFloat16>::lowest());
    case torch::kHalf: return static_cast<float>(std::numeric_limits<c10::Half>::lowest());
    default: CVX_THROW("the T5 encoder runs in float32, float64, bfloat16 or float16, not ", dtype);
  }
}

}  // namespace

T5BlockImpl::T5BlockImpl(const T5Config& c, bool has_relative_attention_bias, const ModuleInit& init) {
  self_attention = T5LayerSelfAttention(c, has_relative_attention_bias, init);
  feed_forward = T5LayerFF(c, init);
  layer = register_module("layer", torch::nn::ModuleList(self_attention, feed_forward));
}

torch::Tensor T5BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  return clamp_half(feed_forward(clamp_half(self_attention(x, bias))));
}

T5StackImpl::T5StackImpl(const T5Config& c, const ModuleInit& init) {
  block = register_module("block", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) {
    blocks.push_back(T5Block(c, /*has_relative_attention_bias=*/i == 0, init));
    block->push_back(blocks.back());
  }
  final_layer_norm = register_module("final_layer_norm", T5LayerNorm(c.d_model, c.layer_norm_epsilon, init));
}

torch::Tensor T5StackImpl::forward(const torch::Tensor& embeddings, const torch::Tensor& attention_mask,
                                   std::vector<torch::Tensor>* hidden_states) {
  const int64_t length = embeddings.size(1);
  // Block 0's bias serves every block. A mask becomes an additive finfo.min on the padded keys.
  auto bias = blocks.front()->self_attention->SelfAttention->compute_bias(length, length);  // [1, H, L, L]
  if (attention_mask.defined()) {
    const auto dtype = embeddings.scalar_type();
    const auto keep = attention_mask.to(embeddings.device(), dtype).unsqueeze(1).unsqueeze(2);  // [B, 1, 1, L]
    bias = bias + (1.0 - keep) * lowest_value(dtype);                                           // [B, H, L, L]
  }
  auto x = embeddings;
  for (auto& b : blocks) {
    if (hidden_states) hidden_states->push_back(x);
    x = b(x, bias);
  }
  x = final_layer_norm(x);
  if (hidden_states) hidden_states->push_back(x);
  return x;
}

T5EncoderImpl::T5EncoderImpl(const T5Config& c, const ModuleInit& init) : config(c) {
  // The table is handed in, so torch::nn::Embedding neither allocates nor initialises a float32 one.
  auto table = new_parameter({c.vocab_size, c.d_model}, init);
  if (init.materialize) {
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(table);
  }
  shared = register_module("shared",
                           torch::nn::Embedding(torch::nn::EmbeddingOptions(c.vocab_size, c.d_model)._weight(table)));
  encoder = register_module("encoder", T5Stack(c, init));
}

torch::Tensor T5EncoderImpl::forward(const torch::Tensor& input_ids, const std::optional<torch::Tensor>& attention_mask,
                                     std::vector<torch::Tensor>* hidden_states) {
  CVX_CHECK(input_ids.dim() == 2, "T5 encoder input ids must be [batch, length], got ", input_ids.sizes());
  CVX_CHECK(!attention_mask || attention_mask->sizes() == input_ids.sizes(), "T5 attention mask ",
            attention_mask->sizes(), " does not match the input ids ", input_ids.sizes());
  const auto x = shared(input_ids.to(device(), torch::kLong));  // no sqrt(d) scaling in T5
  return encoder(x, attention_mask.value_or(torch::Tensor()), hidden_states);
}

torch::Dtype T5EncoderImpl::dtype() const { return shared->weight.scalar_type(); }
torch::Device T5EncoderImpl::device() const { return shared->weight.device(); }

// ---------------------------------------------------------------- construction and loading

T5Encoder make_t5_encoder(const T5Config& config, const ModuleInit& init) {
  lowest_value(init.dtype);  // rejects dtypes the encoder cannot run in
  T5Encoder model(config, init);
  if (init.dtype == torch::kHalf) {
    // transformers' _keep_in_fp32_modules = ["wo"], applied when loading in float16 (4.43: not bfloat16).
    ModuleInit fp32 = init;
    fp32.dtype = torch::kFloat;
    for (auto& b : model->encoder->blocks) apply_init(*b->feed_forward->DenseReluDense->wo, fp32);
  }
  return model;
}

namespace {

// The checkpoint's tensors under the module's names: the tied embedding under `shared.weight`
// whichever name it was saved as, and without the decoder / LM head a full T5 checkpoint has.
class T5EncoderWeights : public TensorSource {
 public:
  explicit T5EncoderWeights(std::shared_ptr<TensorSource> source) : source_(std::move(source)) {
    size_t ignored = 0;
    for (const auto& name : source_->names()) {
      if (name.rfind("decoder.", 0) == 0 || name.rfind("lm_head.", 0) == 0) {
        ++ignored;
      } else if (name != "encoder.embed_tokens.weight") {
        names_[name] = name;
      }
    }
    if (!names_.count("shared.weight") && source_->contains("encoder.embed_tokens.weight"))
      names_["shared.weight"] = "encoder.embed_tokens.weight";
    if (ignored) CVX_INFO << "T5 encoder: ignoring " << ignored << " decoder / lm_head tensors of " << description();
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& item : names_) out.push_back(item.first);
    return out;
  }
  bool contains(const std::string& name) const override { return names_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const override { return source_->info(original(name)); }
  torch::Tensor tensor(const std::string& name) const override { return source_->tensor(original(name)); }
  std::map<std::string, std::string> metadata() const override { return source_->metadata(); }
  std::string description() const override { return source_->description(); }

 private:
  const std::string& original(const std::string& name) const {
    auto it = names_.find(name);
    CVX_CHECK_AS(FormatError, it != names_.end(), description(), " has no tensor ", quote(name));
    return it->second;
  }
  std::shared_ptr<TensorSource> source_;
  std::map<std::string, std::string> names_;  // module name -> name in the source
};

}  // namespace

T5Encoder load_t5_encoder(const std::filesystem::path& dir, torch::Dtype dtype, torch::Device device) {
  const ComponentFolder folder = open_component(dir, "", /*require_weights=*/true);
  auto model = make_t5_encoder(T5Config::from_json(folder.config, folder.config_file.string()),
                               ModuleInit::unmaterialized(dtype, device));
  // No LoadOptions::dtype: every tensor converts into its parameter's dtype (float32 `wo` under float16).
  load_state(*model, T5EncoderWeights(folder.weights));
  model->eval();
  return model;
}

}  // namespace cvx
