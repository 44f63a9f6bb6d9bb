#include "cvx/pipeline/sequence_parallel_transformer.h"

#include "cvx/core/error.h"
#include "cvx/dist/sequence_parallel.h"
#include "cvx/model/attention.h"

namespace cvx {

SequenceParallelTransformer::SequenceParallelTransformer(CogVideoXTransformer transformer, Communicator& group)
    : transformer_(std::move(transformer)), group_(&group) {
  check_sequence_parallel_size(transformer_->config.num_attention_heads, group.size());
}

torch::Tensor SequenceParallelTransformer::operator()(const torch::Tensor& x, const torch::Tensor& embeds,
                                                      const torch::Tensor& timesteps,
                                                      const std::optional<torch::Tensor>& ofs,
                                                      const RotaryEmbedding* rope) {
  const auto& c = transformer_->config;
  CVX_CHECK(x.dim() == 5, "sequence-parallel transformer: expected latents [B, T, C, H, W], got ", x.sizes());
  const int64_t pt = c.patch_size_t.value_or(1);
  CVX_CHECK(x.size(1) % pt == 0, "sequence-parallel transformer: ", x.size(1), " latent frames are not a multiple of ",
            "patch_size_t ", pt);
  const int64_t tokens = (x.size(1) / pt) * (x.size(3) / c.patch_size) * (x.size(4) / c.patch_size);
  const auto lengths = sequence_split(tokens, group_->size());
  const int rank = group_->rank();
  const VideoTokenSlice slice{slice_offsets(lengths)[static_cast<size_t>(rank)], lengths[static_cast<size_t>(rank)]};

  struct RunnerScope {  // removed on every path, so a later whole-sequence forward is not split
    CogVideoXTransformer model;
    ~RunnerScope() { model->set_attention_runner({}); }
  } scope{transformer_};
  Communicator& group = *group_;
  transformer_->set_attention_runner(
      [&group, &lengths](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t text_len) {
        return ulysses_attention(q, k, v, text_len, group, lengths, scaled_dot_product_attention);
      });
  const auto mine = transformer_->forward_tokens(x, embeds, timesteps, ofs, rope, slice);  // [B, N_r, K]
  const auto all = gather_sequence(mine.contiguous(), group, lengths);                     // [B, N, K]
  return transformer_->unpatchify(all, x.size(1), x.size(3), x.size(4));
}

TransformerCall SequenceParallelTransformer::call() const {
  return [self = *this](const torch::Tensor& x, const torch::Tensor& embeds, const torch::Tensor& t,
                        const std::optional<torch::Tensor>& ofs,
                        const RotaryEmbedding* rope) mutable { return self(x, embeds, t, ofs, rope); };
}

}  // namespace cvx
