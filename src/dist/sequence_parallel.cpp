#include "cvx/dist/sequence_parallel.h"

#include <algorithm>

#include "cvx/core/error.h"

namespace cvx {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator* group_of(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(
      ctx->saved_data["group"].toInt());  // NOLINT: the caller's group outlives the graph
}

void check_lengths(const char* what, Communicator& group, const std::vector<int64_t>& lengths) {
  CVX_CHECK(static_cast<int>(lengths.size()) == group.size(), what, " on ", group.name(), ": ", lengths.size(),
            " slice lengths for ", group.size(), " ranks");
}

// x [B, H, N_r, D] -> [B, H / P, N, D].
torch::Tensor to_heads(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& lengths) {
  const char* const what = "sequence_to_heads";
  check_lengths(what, group, lengths);
  const int parts = group.size();
  const int64_t batch = x.size(0), heads = x.size(1), dim = x.size(3);
  CVX_CHECK(x.dim() == 4 && heads % parts == 0, what, " on ", group.name(), ": expected [B, H, N_r, D] with H a ",
            "multiple of ", parts, ", got ", x.sizes());
  CVX_CHECK(x.size(2) == lengths[static_cast<size_t>(group.rank())], what, " on ", group.name(), ": this rank holds ",
            x.size(2), " tokens, its slice has ", lengths[static_cast<size_t>(group.rank())]);
  const int64_t h = heads / parts, mine = x.size(2);
  // Chunk j of the send buffer: heads H_j of this rank's tokens.
  const auto send = x.reshape({batch, parts, h, mine, dim}).permute({1, 0, 2, 3, 4}).contiguous().view(-1);
  std::vector<int64_t> send_counts(static_cast<size_t>(parts), batch * h * mine * dim), recv_counts;
  int64_t total = 0;
  for (const int64_t n : lengths) {
    recv_counts.push_back(batch * h * n * dim);
    total += n;
  }
  auto recv = torch::empty({batch * h * total * dim}, x.options());
  group.all_to_all(send, send_counts, recv, recv_counts)->wait();
  std::vector<torch::Tensor> chunks;
  int64_t at = 0;
  for (const int64_t n : lengths) {
    chunks.push_back(recv.narrow(0, at, batch * h * n * dim).view({batch, h, n, dim}));
    at += batch * h * n * dim;
  }
  return torch::cat(chunks, 2);  // [B, h, N, D]
}

// y [B, H / P, N, D] -> [B, H, N_r, D].
torch::Tensor to_sequence(const torch::Tensor& y, Communicator& group, const std::vector<int64_t>& lengths) {
  const char* const what = "heads_to_sequence";
  check_lengths(what, group, lengths);
  const int parts = group.size();
  const int64_t batch = y.size(0), h = y.size(1), dim = y.size(3);
  int64_t total = 0;
  for (const int64_t n : lengths) total += n;
  CVX_CHECK(y.dim() == 4 && y.size(2) == total, what, " on ", group.name(), ": expected [B, H/P, ", total, ", D], got ",
            y.sizes());
  std::vector<torch::Tensor> pieces;
  std::vector<int64_t> send_counts;
  int64_t at = 0;
  for (const int64_t n : lengths) {
    pieces.push_back(y.narrow(2, at, n).contiguous().view(-1));  // rank j's tokens of this rank's heads
    send_counts.push_back(batch * h * n * dim);
    at += n;
  }
  const auto send = torch::cat(pieces);
  const int64_t mine = lengths[static_cast<size_t>(group.rank())];
  std::vector<int64_t> recv_counts(static_cast<size_t>(parts), batch * h * mine * dim);
  auto recv = torch::empty({parts * batch * h * mine * dim}, y.options());
  group.all_to_all(send, send_counts, recv, recv_counts)->wait();
  return recv.view({parts, batch, h, mine, dim}).permute({1, 0, 2, 3, 4}).reshape({batch, parts * h, mine, dim});
}

torch::Tensor gather(const torch::Tensor& x, Communicator& group) {
  const int parts = group.size();
  const auto shard = x.contiguous().view(-1);
  auto full = torch::empty({parts * shard.numel()}, x.options());
  group.all_gather(shard, full)->wait();
  const int64_t batch = x.size(0), h = x.size(1), len = x.size(2), dim = x.size(3);
  return full.view({parts, batch, h, len, dim}).permute({1, 0, 2, 3, 4}).reshape({batch, parts * h, len, dim});
}

// grad [B, H, L, D] -> this rank's heads [B, H / P, L, D], summed over the group.
torch::Tensor reduce_heads(const torch::Tensor& grad, Communicator& group) {
  const int parts = group.size();
  const int64_t batch = grad.size(0), h = grad.size(1) / parts, len = grad.size(2), dim = grad.size(3);
  const auto full = grad.reshape({batch, parts, h, len, dim}).permute({1, 0, 2, 3, 4}).contiguous().view(-1);
  auto shard = torch::empty({batch * h * len * dim}, grad.options());
  group.reduce_scatter(full, shard, ReduceOp::sum)->wait();
  return shard.view({batch, h, len, dim});
}

struct SequenceToHeads : public torch::autograd::Function<SequenceToHeads> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               std::vector<int64_t> lengths) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["lengths"] = lengths;
    return to_heads(x, *reinterpret_cast<Communicator*>(group), lengths);  // NOLINT
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto lengths = ctx->saved_data["lengths"].toIntVector();
    return {to_sequence(grad[0].contiguous(), *group_of(ctx), lengths), torch::Tensor(), torch::Tensor()};
  }
};

struct HeadsToSequence : public torch::autograd::Function<HeadsToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y, int64_t group,
                               std::vector<int64_t> lengths) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["lengths"] = lengths;
    return to_sequence(y, *reinterpret_cast<Communicator*>(group), lengths);  // NOLINT
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const auto lengths = ctx->saved_data["lengths"].toIntVector();
    return {to_heads(grad[0].contiguous(), *group_of(ctx), lengths), torch::Tensor(), torch::Tensor()};
  }
};

struct GatherHeads : public torch::autograd::Function<GatherHeads> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return gather(x, *reinterpret_cast<Communicator*>(group));  // NOLINT
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {reduce_heads(grad[0], *group_of(ctx)), torch::Tensor()};
  }
};

int64_t handle(Communicator& group) { return reinterpret_cast<int64_t>(&group); }  // NOLINT

}  // namespace

std::vector<int64_t> sequence_split(int64_t length, int parts) {
  CVX_CHECK(parts >= 1 && length >= 0, "sequence_split: ", length, " tokens over ", parts, " ranks");
  std::vector<int64_t> out;
  for (int r = 0; r < parts; ++r) out.push_back(length / parts + (r < length % parts ? 1 : 0));
  return out;
}

std::vector<int64_t> slice_offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> out;
  int64_t at = 0;
  for (const int64_t n : lengths) {
    out.push_back(at);
    at += n;
  }
  return out;
}

std::string valid_sequence_parallel_sizes(int64_t num_heads) {
  std::string out;
  for (int64_t p = 1; p <= num_heads; ++p)
    if (num_heads % p == 0) out += (out.empty() ? "" : ", ") + std::to_string(p);
  return out;
}

void check_sequence_parallel_size(int64_t num_heads, int parts) {
  CVX_CHECK_AS(ConfigError, parts >= 1 && num_heads % parts == 0, "[parallel] sequence_parallel_size = ", parts,
               " does not divide the transformer's ", num_heads,
               " attention heads (Ulysses gives each rank of the sequence group H / P heads): use one of ",
               valid_sequence_parallel_sizes(num_heads));
}

torch::Tensor sequence_to_heads(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& lengths) {
  return SequenceToHeads::apply(x, handle(group), lengths);
}

torch::Tensor heads_to_sequence(const torch::Tensor& y, Communicator& group, const std::vector<int64_t>& lengths) {
  return HeadsToSequence::apply(y, handle(group), lengths);
}

torch::Tensor gather_heads(const torch::Tensor& x, Communicator& group) { return GatherHeads::apply(x, handle(group)); }

torch::Tensor gather_sequence(const torch::Tensor& x, Communicator& group, const std::vector<int64_t>& lengths) {
  check_lengths("gather_sequence", group, lengths);
  CVX_CHECK(x.dim() == 3 && x.size(1) == lengths[static_cast<size_t>(group.rank())], "gather_sequence on ",
            group.name(), ": expected this rank's [B, ", lengths[static_cast<size_t>(group.rank())], ", K], got ",
            x.sizes());
  const int parts = group.size();
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  const int64_t batch = x.size(0), dim = x.size(2);
  auto padded = torch::zeros({batch, longest, dim}, x.options());
  padded.narrow(1, 0, x.size(1)).copy_(x);
  auto full = torch::empty({parts * padded.numel()}, x.options());
  group.all_gather(padded.view(-1), full)->wait();
  const auto slices = full.view({parts, batch, longest, dim});
  std::vector<torch::Tensor> pieces;
  for (int r = 0; r < parts; ++r) pieces.push_back(slices[r].narrow(1, 0, lengths[static_cast<size_t>(r)]));
  return torch::cat(pieces, 1);  // [B, N, K]
}

torch::Tensor ulysses_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                int64_t text_len, Communicator& group, const std::vector<int64_t>& video_lengths,
                                const AttendFn& attend) {
  const int parts = group.size();
  check_sequence_parallel_size(q.size(1), parts);
  const int64_t h = q.size(1) / parts, mine = q.size(2) - text_len;
  const auto split = [&](const torch::Tensor& x) {  // [B, H, L + N_r, D] -> [B, h, L + N, D]
    const auto text = x.narrow(2, 0, text_len).narrow(1, group.rank() * h, h);
    const auto video = sequence_to_heads(x.narrow(2, text_len, mine).contiguous(), group, video_lengths);
    return torch::cat({text, video}, 2);
  };
  const auto o = attend(split(q), split(k), split(v));  // [B, h, L + N, D]
  const auto text = gather_heads(o.narrow(2, 0, text_len).contiguous(), group);
  const auto video = heads_to_sequence(o.narrow(2, text_len, o.size(2) - text_len).contiguous(), group, video_lengths);
  return torch::cat({text, video}, 2);  // [B, H, L + N_r, D]
}

}  // namespace cvx
