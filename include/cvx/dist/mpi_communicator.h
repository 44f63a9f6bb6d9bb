// Collectives on CPU tensors over an MPI communicator, non-blocking (MPI_Iallgather,
// MPI_Ireduce_scatter_block, MPI_Iallreduce, MPI_Ibcast, MPI_Ibarrier).
//
// fp32, fp64, int32 and int64 travel as themselves. fp16 and bf16 are moved as raw 16-bit words
// by all_gather and broadcast; reductions convert them to fp32, reduce in fp32 and round once
// into the output when the work completes (a per-hop bf16 sum would lose bits on every rank).
// avg is a sum divided by size() on completion.
//
// Work::wait() polls MPI_Test (libnbc only progresses inside MPI calls), spinning briefly and
// then sleeping with a growing backoff so ranks oversubscribing a few cores do not starve each
// other. A wait() still not done after options().timeout_s logs the collective, its size, the
// rank and the group and aborts the job (a dead or stuck peer must not leave the others waiting
// forever). A Work dropped without wait() is waited for in its destructor: MPI still uses its
// buffers. A Work is used from one thread at a time.
#pragma once
#include <mpi.h>

#include "cvx/dist/communicator.h"

namespace cvx {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (collective over it), so traffic never matches the caller's own messages,
  // and sets MPI_ERRORS_RETURN on the copy. `group` labels it in messages: name() = "mpi:<group>".
  MpiCommunicator(MPI_Comm comm, const std::string& group, CommunicatorOptions options = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

  WorkPtr all_gather(const torch::Tensor& shard, const torch::Tensor& full) override;
  WorkPtr reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) override;
  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override;
  WorkPtr broadcast(const torch::Tensor& tensor, int root) override;
  WorkPtr all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts, const torch::Tensor& output,
                     const std::vector<int64_t>& recv_counts) override;
  void barrier() override;
  // A negative color leaves this rank out of every group (MPI_UNDEFINED): it gets nullptr.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& group) override;

 private:
  void check_cpu(const char* collective, const torch::Tensor& tensor) const;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace cvx
