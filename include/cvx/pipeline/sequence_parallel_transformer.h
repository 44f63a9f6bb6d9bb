// Sampling with sequence parallelism: every rank of a sequence group evaluates the transformer on
// its contiguous slice of the video tokens (Ulysses attention over the group, dist/sequence_parallel.h)
// and the slices are all-gathered, so each rank holds the whole output and runs the same scheduler
// step on the same latents. Classifier-free guidance's two branches stay one batch of 2.
//
// Every rank of the group must make the same calls with the same inputs (the same request and
// seed): the initial noise, the image latents and the DPM noise are drawn on each rank from the
// request's CPU generator, so they agree without a broadcast.
#pragma once
#include <torch/torch.h>

#include <optional>

#include "cvx/dist/communicator.h"
#include "cvx/model/transformer.h"
#include "cvx/pipeline/denoise.h"

namespace cvx {

class SequenceParallelTransformer {
 public:
  // Throws ConfigError when the group's size does not divide the transformer's heads.
  SequenceParallelTransformer(CogVideoXTransformer transformer, Communicator& group);

  // As CogVideoXTransformerImpl::forward: x [B, T, Cin, H, W] -> [B, T, Cout, H, W], equal on every
  // rank of the group. The attention runner is installed for the call and removed after it.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& embeds, const torch::Tensor& timesteps,
                           const std::optional<torch::Tensor>& ofs, const RotaryEmbedding* rope);

  TransformerCall call() const;

 private:
  CogVideoXTransformer transformer_;
  Communicator* group_;
};

}  // namespace cvx
