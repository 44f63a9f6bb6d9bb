// Sequence parallelism (DeepSpeed-Ulysses) for the joint text + video attention of CogVideoX, exact
// for any sequence length.
//
// Rules:
// - The video tokens of a sample are split over the P ranks of a sequence group in contiguous
//   slices (sequence_split: the first N mod P ranks hold one token more; a rank may hold none). The
//   text tokens are replicated: every rank computes all of them.
// - Around the attention core, an all-to-all swaps the sequence split for a head split: each rank
//   attends over the full sequence [text; all video tokens] with H / P heads, then the inverse
//   all-to-all gives every rank its own video tokens back with all heads; the text outputs of the
//   P head groups are all-gathered (backward: reduce-scatter, summed), so they stay replicated.
// - Every exchange is an autograd function whose backward is the adjoint exchange, so the
//   gradients of each rank's inputs are exact; those of replicated inputs (text tokens,
//   parameters) are partial sums that add up over the group to the unsplit gradient.
// - P must divide the head count (plain Ulysses); other P are refused naming the valid values.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cvx/dist/communicator.h"

namespace cvx {

// Lengths of the P contiguous slices of `length` tokens: length / P each, one more for the first
// length % P.
std::vector<int64_t> sequence_split(int64_t length, int parts);
// Where each slice starts.
std::vector<int64_t> slice_offsets(const std::vector<int64_t>& lengths);

// The sequence-parallel sizes that divide `num_heads` ("1, 2, 3, 4, 6, 8, ..."), for messages.
std::string valid_sequence_parallel_sizes(int64_t num_heads);
// Throws ConfigError naming the valid sizes when `parts` does not divide `num_heads`.
void check_sequence_parallel_size(int64_t num_heads, int parts);

// x [B, H, N_r, D] (this rank's tokens, all heads) -> [B, H / P, N, D] (all tokens of this rank's
// heads H_r = [r H/P, (r + 1) H/P)); `lengths` = every rank's N_i. Backward: heads_to_sequence.
torch::Tensor sequence_to_heads(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& lengths);
// The inverse: y [B, H / P, N, D] -> [B, H, N_r, D]. Backward: sequence_to_heads.
torch::Tensor heads_to_sequence(const torch::Tensor& y, Communicator& group, const std::vector<int64_t>& lengths);
// x [B, H / P, L, D] (this rank's heads) -> [B, H, L, D] (every rank's heads, in rank order).
// Backward: the gradient's chunk of this rank's heads, summed over the group.
torch::Tensor gather_heads(const torch::Tensor& x, Communicator& group);

// x [B, N_r, K] (this rank's slice of a sequence) -> [B, N, K] (every rank's slices in rank order),
// the same on every rank of the group. No gradient (sampling: each rank needs the whole output for
// the scheduler step). Slices are padded to the longest for one all-gather.
torch::Tensor gather_sequence(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& lengths);

// q, k, v [B, h, S, Dh] -> [B, h, S, Dh]: the attention itself (the model's scaled dot-product
// attention; dist/ does not know the model).
using AttendFn = std::function<torch::Tensor(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v)>;

// The attention core a block runs, q, k, v [B, H, L + N_r, Dh] with the L text tokens first ->
// [B, H, L + N_r, Dh]: all-to-all, `attend` over [text; all video tokens] with this rank's heads,
// all-to-all back (text outputs all-gathered). `video_lengths`: every rank's N_i. The same result
// as `attend` on the unsplit sequence.
torch::Tensor ulysses_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                int64_t text_len, Communicator& group, const std::vector<int64_t>& video_lengths,
                                const AttendFn& attend);

}  // namespace cvx
