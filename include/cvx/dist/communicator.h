// Collectives over a group of ranks, as the sharded engine needs them: all-gather into a flat
// buffer, reduce-scatter (sum or average), all-reduce, broadcast, barrier; and all-to-all with
// uneven counts, as sequence parallelism needs it. Every collective is
// asynchronous and returns a Work handle; wait() completes it (on GPU: orders the caller's compute
// stream after it). Backends:
//   MpiCommunicator   CPU tensors over an MPI communicator (fp32, fp64, fp16, bf16, int32, int64)
//   NcclCommunicator  CUDA tensors over NCCL, its own stream, a watchdog for errors and timeouts
//   FakeCommunicator  one process playing rank r of a world of N (shapes, memory and traffic of
//                     one rank's share without the other ranks)
// Tensors must be contiguous; a collective keeps references to its tensors until wait() returns,
// so callers may drop theirs right after issuing it.
//
// Failure model: a collective that has not completed after the communicator's timeout, or that
// fails in the library, ends the whole job (MPI_Abort; NCCL: ncclCommAbort first) with a message
// naming the collective, the rank and the group. A dead peer never leaves the others waiting.
#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cvx {

enum class ReduceOp { sum, avg, max };
const char* reduce_op_name(ReduceOp op);

class Work {
 public:
  virtual ~Work() = default;
  // Completes the collective: results are in the output tensors afterwards (GPU: visible to work
  // issued later on the current compute stream). Idempotent.
  virtual void wait() = 0;
  // True once wait() would return without blocking (never blocks).
  virtual bool completed() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

// Bytes this rank sends per collective kind, counted with the ring algorithm's cost (what NCCL
// and large-message MPI do): all-gather and reduce-scatter (n-1)/n of the full buffer, all-reduce
// 2(n-1)/n, broadcast the buffer once (root), all-to-all what goes to the other ranks — so figures
// are comparable across backends.
struct CommStats {
  enum Kind { all_gather = 0, reduce_scatter, all_reduce, broadcast, all_to_all, num_kinds };
  std::array<uint64_t, num_kinds> bytes{};
  std::array<uint64_t, num_kinds> calls{};
  uint64_t total_bytes() const;
  void reset() { *this = CommStats{}; }
  static const char* kind_name(int kind);
};

struct CommunicatorOptions {
  double timeout_s = 1800;  // a collective not done after this long aborts the job
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl" or "fake"; name() adds the group ("mpi:world", "nccl:shard", ...).
  virtual std::string backend() const = 0;
  const std::string& name() const { return name_; }

  // shard [S] -> full [size * S]: rank r's shard lands at [r * S, (r + 1) * S). Same dtype and
  // device; full must not alias shard.
  virtual WorkPtr all_gather(const torch::Tensor& shard, const torch::Tensor& full) = 0;
  // full [size * S] -> shard [S]: the element-wise reduction over ranks of chunk r of full. bf16
  // and fp16 are reduced in fp32 (converted before, rounded once after) by the MPI and fake
  // backends; NCCL reduces them natively (its ring rounds at every step). avg divides the sum by
  // size() and is an error for integer tensors.
  virtual WorkPtr reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) = 0;
  // In place.
  virtual WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) = 0;
  // In place: every rank ends with root's values.
  virtual WorkPtr broadcast(const torch::Tensor& tensor, int root) = 0;
  // MPI_Alltoallv on flat buffers: input [sum(send_counts)] is size() consecutive chunks, chunk j
  // (send_counts[j] elements) going to rank j; output [sum(recv_counts)] receives rank i's chunk at
  // offset sum(recv_counts[:i]). recv_counts[i] must equal rank i's send_counts[rank()] (uneven
  // counts allowed, zeros too). Same dtype and device; output must not overlap input.
  virtual WorkPtr all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                             const torch::Tensor& output, const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;

  // A new communicator over the ranks that pass the same color, ordered by key (MPI_Comm_split
  // semantics). Collective over this communicator. `name` labels the group in messages.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_.reset(); }
  const CommunicatorOptions& options() const { return options_; }

 protected:
  Communicator(std::string name, CommunicatorOptions options) : name_(std::move(name)), options_(options) {}
  // Adds one call and its ring-cost bytes to the stats. `bytes` is the full buffer (all-gather,
  // reduce-scatter: the [size * S] one); for broadcast, what this rank sends: the buffer on the
  // root, 0 elsewhere; for all-to-all, what this rank sends to the others. A world of one sends
  // nothing.
  void count(CommStats::Kind kind, uint64_t bytes);

  // Argument checks every backend applies (each throws cvx::Error naming the collective and the
  // group); the device is the backend's own check.
  // Defined and contiguous, of a dtype the collectives carry (fp32, fp64, fp16, bf16, int32, int64).
  void check_tensor(const char* collective, const torch::Tensor& tensor) const;
  // Both tensors checked, same dtype and device, full.numel() == size() * shard.numel(), no overlap.
  void check_shard_full(const char* collective, const torch::Tensor& shard, const torch::Tensor& full) const;
  // Averages are defined for floating-point tensors only (an integer mean would truncate).
  void check_reduce_op(const char* collective, const torch::Tensor& tensor, ReduceOp op) const;
  void check_root(const char* collective, int root) const;
  // Both tensors checked, same dtype and device, one count per rank, none negative, the buffers
  // as long as their counts, no overlap.
  void check_all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                        const torch::Tensor& output, const std::vector<int64_t>& recv_counts) const;
  std::string name_;
  CommunicatorOptions options_;
  CommStats stats_;
};

// Blocking conveniences.
inline void all_gather(Communicator& c, const torch::Tensor& shard, const torch::Tensor& full) {
  c.all_gather(shard, full)->wait();
}
inline void reduce_scatter(Communicator& c, const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) {
  c.reduce_scatter(full, shard, op)->wait();
}
inline void all_reduce(Communicator& c, const torch::Tensor& tensor, ReduceOp op) { c.all_reduce(tensor, op)->wait(); }
inline void broadcast(Communicator& c, const torch::Tensor& tensor, int root) { c.broadcast(tensor, root)->wait(); }
inline void all_to_all(Communicator& c, const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                       const torch::Tensor& output, const std::vector<int64_t>& recv_counts) {
  c.all_to_all(input, send_counts, output, recv_counts)->wait();
}

}  // namespace cvx
