#include "cvx/dist/fake_communicator.h"

#include <algorithm>

#include "cvx/core/error.h"

namespace cvx {
namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool completed() override { return true; }
};

// `values` summed over `size` identical ranks, written into `out`; fp16/bf16 in fp32, rounded once.
void write_sum(const torch::Tensor& values, int64_t size, const torch::Tensor& out) {
  const auto type = values.scalar_type();
  const bool widen = type == torch::kFloat16 || type == torch::kBFloat16;
  out.copy_((widen ? values.to(torch::kFloat32) : values) * size);
}

}  // namespace

FakeCommunicator::FakeCommunicator(int rank, int size, CommunicatorOptions options, const std::string& group)
    : Communicator("fake:" + group, options), rank_(rank), size_(size) {
  CVX_CHECK(size >= 1 && rank >= 0 && rank < size, "communicator ", name(), ": rank ", rank,
            " must lie in a world of size >= 1 (got size ", size, ")");
}

WorkPtr FakeCommunicator::all_gather(const torch::Tensor& shard, const torch::Tensor& full) {
  check_shard_full("all_gather", shard, full);
  count(CommStats::all_gather, full.nbytes());
  const int64_t s = shard.numel();
  full.view({size_, s}).copy_(shard.reshape({1, s}).expand({size_, s}));  // [size, S]
  return std::make_shared<DoneWork>();
}

WorkPtr FakeCommunicator::reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) {
  check_shard_full("reduce_scatter", shard, full);
  check_reduce_op("reduce_scatter", full, op);
  count(CommStats::reduce_scatter, full.nbytes());
  const torch::Tensor chunk = full.view({size_, shard.numel()})[rank_].view(shard.sizes());  // [S]
  if (op == ReduceOp::sum) {
    write_sum(chunk, size_, shard);
  } else {
    shard.copy_(chunk);
  }
  return std::make_shared<DoneWork>();
}

WorkPtr FakeCommunicator::all_reduce(const torch::Tensor& tensor, ReduceOp op) {
  check_tensor("all_reduce", tensor);
  check_reduce_op("all_reduce", tensor, op);
  count(CommStats::all_reduce, tensor.nbytes());
  if (op == ReduceOp::sum) write_sum(tensor, size_, tensor);
  return std::make_shared<DoneWork>();
}

WorkPtr FakeCommunicator::broadcast(const torch::Tensor& tensor, int root) {
  check_tensor("broadcast", tensor);
  check_root("broadcast", root);
  count(CommStats::broadcast, rank_ == root ? tensor.nbytes() : 0);
  return std::make_shared<DoneWork>();
}

WorkPtr FakeCommunicator::all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                                     const torch::Tensor& output, const std::vector<int64_t>& recv_counts) {
  check_all_to_all(input, send_counts, output, recv_counts);
  const auto r = static_cast<size_t>(rank_);
  int64_t mine = 0;  // where this rank's own chunk starts in input
  for (size_t j = 0; j < r; ++j) mine += send_counts[j];
  count(CommStats::all_to_all, static_cast<uint64_t>(input.numel() - send_counts[r]) * input.element_size());
  int64_t at = 0;
  for (size_t i = 0; i < recv_counts.size(); ++i) {
    const int64_t n = recv_counts[i], take = std::min(n, send_counts[r]);
    auto slot = output.narrow(0, at, n);
    if (take > 0) slot.narrow(0, 0, take).copy_(input.narrow(0, mine, take));
    if (take < n) slot.narrow(0, take, n - take).zero_();
    at += n;
  }
  return std::make_shared<DoneWork>();
}

std::unique_ptr<Communicator> FakeCommunicator::split(int color, int key, const std::string& group) {
  CVX_THROW("split on ", name(),
            ": a fake world has no peers to split with (their colors are unknown); construct a "
            "FakeCommunicator with this rank's rank and size in group ",
            quote(group), " instead");
}

}  // namespace cvx
