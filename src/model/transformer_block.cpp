// The blocks of CogVideoXTransformer3DModel and their parts.
#include "cvx/core/error.h"
#include "cvx/model/attention.h"
#include "cvx/model/transformer.h"

namespace cvx {
namespace F = torch::nn::functional;

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_features, int64_t time_embed_dim, const ModuleInit& init) {
  linear_1 = register_module("linear_1", LoRALinear(in_features, time_embed_dim, true, init));
  linear_2 = register_module("linear_2", LoRALinear(time_embed_dim, time_embed_dim, true, init));
}

torch::Tensor TimestepEmbeddingImpl::forward(const torch::Tensor& x) {
  return linear_2->forward(torch::silu(linear_1->forward(x)));
}

LayerNormZeroImpl::LayerNormZeroImpl(int64_t conditioning_dim, int64_t dim, double eps, const ModuleInit& init) {
  linear = register_module("linear", LoRALinear(conditioning_dim, 6 * dim, true, init));
  norm = register_module("norm", adopt(torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)), init));
}

LayerNormZeroImpl::Output LayerNormZeroImpl::forward(const torch::Tensor& hidden, const torch::Tensor& encoder,
                                                     const torch::Tensor& temb) {
  // [B, 6D] -> six [B, 1, D]: shift, scale, gate, enc_shift, enc_scale, enc_gate
  const auto chunks = linear->forward(torch::silu(temb)).unsqueeze(1).chunk(6, /*dim=*/2);
  Output out;
  out.hidden = norm->forward(hidden) * (1 + chunks[1]) + chunks[0];
  out.encoder = norm->forward(encoder) * (1 + chunks[4]) + chunks[3];
  out.gate = chunks[2];
  out.encoder_gate = chunks[5];
  return out;
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads, int64_t head_size, bool bias, const ModuleInit& init)
    : num_heads(heads), head_dim(head_size) {
  norm_q =
      register_module("norm_q", adopt(torch::nn::LayerNorm(torch::nn::LayerNormOptions({head_dim}).eps(1e-6)), init));
  norm_k =
      register_module("norm_k", adopt(torch::nn::LayerNorm(torch::nn::LayerNormOptions({head_dim}).eps(1e-6)), init));
  to_q = register_module("to_q", LoRALinear(dim, dim, bias, init));
  to_k = register_module("to_k", LoRALinear(dim, dim, bias, init));
  to_v = register_module("to_v", LoRALinear(dim, dim, bias, init));
  to_out_0 = LoRALinear(dim, dim, bias, init);
  to_out = register_module("to_out", torch::nn::ModuleList(to_out_0, torch::nn::Dropout(0.0)));
}

std::pair<torch::Tensor, torch::Tensor> AttentionImpl::forward(const torch::Tensor& hidden,
                                                               const torch::Tensor& encoder,
                                                               const RotaryEmbedding* rope) {
  const int64_t text_len = encoder.size(1);
  const auto joint = torch::cat({encoder, hidden}, 1);  // [B, L + N, D]
  const int64_t batch = joint.size(0), seq = joint.size(1);
  auto heads = [&](const torch::Tensor& x) { return x.view({batch, seq, num_heads, head_dim}).transpose(1, 2); };
  auto q = norm_q->forward(heads(to_q->forward(joint)));  // [B, H, L + N, Dh]
  auto k = norm_k->forward(heads(to_k->forward(joint)));
  auto v = heads(to_v->forward(joint));
  if (rope != nullptr && rope->cos.defined()) {
    // Rotate the video tokens only; text tokens keep their positions-free features.
    const int64_t video_len = seq - text_len;
    q = torch::cat({q.narrow(2, 0, text_len), apply_rotary_emb(q.narrow(2, text_len, video_len), rope->cos, rope->sin)},
                   2);
    k = torch::cat({k.narrow(2, 0, text_len), apply_rotary_emb(k.narrow(2, text_len, video_len), rope->cos, rope->sin)},
                   2);
  }
  auto o = (runner ? runner(q, k, v, text_len) : scaled_dot_product_attention(q, k, v))
               .transpose(1, 2)
               .reshape({batch, seq, num_heads * head_dim});
  o = to_out_0->forward(o);
  return {o.narrow(1, text_len, seq - text_len), o.narrow(1, 0, text_len)};
}

GeluProjectionImpl::GeluProjectionImpl(int64_t in_features, int64_t out_features, const ModuleInit& init) {
  proj = register_module("proj", LoRALinear(in_features, out_features, true, init));
}

torch::Tensor GeluProjectionImpl::forward(const torch::Tensor& x) {
  return F::gelu(proj->forward(x), F::GELUFuncOptions().approximate("tanh"));
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t inner_dim, const ModuleInit& init) {
  net_0 = GeluProjection(dim, inner_dim, init);
  net_2 = LoRALinear(inner_dim, dim, true, init);
  // net.1 and net.3 are parameterless dropouts; kept so child indices match the checkpoint keys.
  net = register_module("net", torch::nn::ModuleList(net_0, torch::nn::Dropout(0.0), net_2, torch::nn::Dropout(0.0)));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) { return net_2->forward(net_0->forward(x)); }

TransformerBlockImpl::TransformerBlockImpl(const TransformerConfig& c, const ModuleInit& init) {
  const int64_t dim = c.inner_dim();
  norm1 = register_module("norm1", LayerNormZero(c.time_embed_dim, dim, c.norm_eps, init));
  attn1 = register_module("attn1", Attention(dim, c.num_attention_heads, c.attention_head_dim, c.attention_bias, init));
  norm2 = register_module("norm2", LayerNormZero(c.time_embed_dim, dim, c.norm_eps, init));
  ff = register_module("ff", FeedForward(dim, 4 * dim, init));
}

std::pair<torch::Tensor, torch::Tensor> TransformerBlockImpl::forward(const torch::Tensor& hidden,
                                                                      const torch::Tensor& encoder,
                                                                      const torch::Tensor& temb,
                                                                      const RotaryEmbedding* rope) {
  const int64_t text_len = encoder.size(1);
  auto n1 = norm1->forward(hidden, encoder, temb);
  auto [attn_video, attn_text] = attn1->forward(n1.hidden, n1.encoder, rope);
  auto h = hidden + n1.gate * attn_video;
  auto e = encoder + n1.encoder_gate * attn_text;
  auto n2 = norm2->forward(h, e, temb);
  const auto f = ff->forward(torch::cat({n2.encoder, n2.hidden}, 1));  // [B, L + N, D]
  h = h + n2.gate * f.narrow(1, text_len, f.size(1) - text_len);
  e = e + n2.encoder_gate * f.narrow(1, 0, text_len);
  return {h, e};
}

}  // namespace cvx
