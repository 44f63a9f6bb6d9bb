// One process playing rank `rank` of a world of `size`, with no other process: collectives give
// correctly shaped, deterministic results as if every rank held this rank's values, and the
// stats count exactly what that rank would send in a real world of `size` — so the per-rank
// traffic and memory of, say, 8-way sharding can be measured on one machine. Pure torch ops:
// any device (CPU or CUDA). Every Work is complete when returned.
//
//   all_gather      every chunk of full = this rank's shard
//   reduce_scatter  shard = chunk `rank` of full, times size for sum (unchanged for avg, max)
//   all_reduce      times size for sum, unchanged for avg and max
//   broadcast       unchanged (this rank's values stand for the root's)
//   all_to_all      chunk i of output = chunk `rank` of input (what every rank would send this
//                   one), cut or zero-padded to recv_counts[i]
//   barrier         nothing to wait for
// Sums of fp16/bf16 are computed in fp32 and rounded once, as MpiCommunicator does. The argument
// checks are those of the real backends, so a fake run rejects what a real run would.
#pragma once
#include "cvx/dist/communicator.h"

namespace cvx {

class FakeCommunicator final : public Communicator {
 public:
  // name() = "fake:<group>".
  FakeCommunicator(int rank, int size, CommunicatorOptions options = {}, const std::string& group = "world");

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "fake"; }

  WorkPtr all_gather(const torch::Tensor& shard, const torch::Tensor& full) override;
  WorkPtr reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) override;
  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override;
  WorkPtr broadcast(const torch::Tensor& tensor, int root) override;
  WorkPtr all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts, const torch::Tensor& output,
                     const std::vector<int64_t>& recv_counts) override;
  void barrier() override {}
  // Not supported: the other ranks' colors are unknown. Throws; construct a FakeCommunicator with
  // the group's rank and size instead.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& group) override;

 private:
  int rank_;
  int size_;
};

}  // namespace cvx
