#include "cvx/dist/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "cvx/core/checked_call.h"
#include "cvx/core/log.h"
#include "cvx/core/mpi_env.h"

namespace cvx {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kTimeoutExitCode = 1;

bool is_half(torch::ScalarType type) { return type == torch::kFloat16 || type == torch::kBFloat16; }

// fp16/bf16 only ever reach MPI as raw words to move: reductions widen them to fp32 first.
MPI_Datatype mpi_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kFloat16:
    case torch::kBFloat16: return MPI_UINT16_T;
    default: CVX_THROW("no MPI datatype for ", type);  // check_tensor rejects these earlier
  }
}

// avg is a sum divided on completion.
MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

int mpi_count(const Communicator& comm, const char* collective, int64_t num_elements) {
  CVX_CHECK(num_elements <= INT_MAX, collective, " on ", comm.name(), ": ", num_elements,
            " elements exceed MPI's int count; split the buffer");
  return static_cast<int>(num_elements);
}

// What a timeout message needs; copied so a Work may outlive its communicator.
struct WorkInfo {
  const char* collective;
  uint64_t bytes;
  int rank;
  int size;
  std::string group;
  double timeout_s;
};

class MpiWork final : public Work {
 public:
  MpiWork(WorkInfo info, MPI_Request request, std::vector<torch::Tensor> tensors, std::function<void()> finish)
      : info_(std::move(info)), request_(request), tensors_(std::move(tensors)), finish_(std::move(finish)) {}

  // Dropped without wait(): MPI still reads and writes the buffers, so they must outlive the transfer.
  ~MpiWork() override {
    if (done_) return;
    try {
      wait();
    } catch (const std::exception& e) {
      CVX_ERROR << info_.collective << " on " << info_.group << " failed while its Work was dropped: " << e.what();
    }
  }

  void wait() override {
    if (done_) return;
    const auto start = Clock::now();
    const auto timeout = std::chrono::duration<double>(info_.timeout_s);
    auto nap = std::chrono::microseconds(20);
    while (!test()) {
      const auto waited = Clock::now() - start;
      // Most small collectives finish within a few polls; past that, sleep so that ranks sharing
      // cores leave them to the peers that must make progress.
      if (waited < std::chrono::microseconds(100)) continue;
      if (waited > timeout) timed_out();
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }

  bool completed() override { return done_ || test(); }

 private:
  bool test() {
    int flag = 0;
    CVX_MPI(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    if (!flag) return false;
    done_ = true;
    const auto finish = std::move(finish_);
    if (finish) finish();
    tensors_.clear();
    return true;
  }

  [[noreturn]] void timed_out() const {
    CVX_ERROR << info_.collective << " of " << info_.bytes << " bytes timed out after " << info_.timeout_s
              << " s on rank " << info_.rank << " of group " << info_.group << " (" << info_.size
              << " ranks): a peer is dead or stuck; aborting the job";
    log::flush();
    mpi_abort(kTimeoutExitCode);
  }

  WorkInfo info_;
  MPI_Request request_;
  std::vector<torch::Tensor> tensors_;  // every buffer MPI touches, until it is done
  std::function<void()> finish_;        // division (avg) and rounding back (fp16/bf16), once
  bool done_ = false;
};

// The completion step of a reduction that ran in `reduced` ([S], the wire type) for `out`.
std::function<void()> finish_reduction(const torch::Tensor& reduced, const torch::Tensor& out, ReduceOp op, int size) {
  const bool divide = op == ReduceOp::avg && size > 1;
  const bool round_back = !reduced.is_same(out);
  if (!divide && !round_back) return nullptr;
  return [reduced, out, divide, round_back, size]() {
    if (divide) reduced.div_(size);
    if (round_back) out.copy_(reduced);  // the one rounding to fp16/bf16
  };
}

// fp16/bf16 reductions run on an fp32 copy.
torch::Tensor widened(const torch::Tensor& tensor) {
  return is_half(tensor.scalar_type()) ? tensor.to(torch::kFloat32) : tensor;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, const std::string& group, CommunicatorOptions options)
    : Communicator("mpi:" + group, options) {
  CVX_CHECK_AS(ConfigError, options.timeout_s > 0, "communicator ", name(),
               ": the collective timeout must be > 0 s (got ", options.timeout_s, ")");
  CVX_CHECK(comm != MPI_COMM_NULL, "communicator ", name(), ": MPI_COMM_NULL given");
  CVX_MPI(MPI_Comm_dup(comm, &comm_));
  CVX_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  CVX_MPI(MPI_Comm_rank(comm_, &rank_));
  CVX_MPI(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check_cpu(const char* collective, const torch::Tensor& tensor) const {
  CVX_CHECK(tensor.defined(), collective, " on ", name(), ": undefined tensor");
  CVX_CHECK(tensor.device().is_cpu(), collective, " on ", name(), ": MPI collectives take CPU tensors, got one on ",
            tensor.device(), "; use the nccl backend for GPU tensors");
}

WorkPtr MpiCommunicator::all_gather(const torch::Tensor& shard, const torch::Tensor& full) {
  const char* const collective = "all_gather";
  check_cpu(collective, shard);
  check_cpu(collective, full);
  check_shard_full(collective, shard, full);
  const int n = mpi_count(*this, collective, shard.numel());
  const MPI_Datatype type = mpi_type(shard.scalar_type());
  MPI_Request request;
  CVX_MPI(MPI_Iallgather(shard.data_ptr(), n, type, full.data_ptr(), n, type, comm_, &request));
  count(CommStats::all_gather, full.nbytes());
  return std::make_shared<MpiWork>(WorkInfo{collective, full.nbytes(), rank_, size_, name(), options_.timeout_s},
                                   request, std::vector<torch::Tensor>{shard, full}, nullptr);
}

WorkPtr MpiCommunicator::reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) {
  const char* const collective = "reduce_scatter";
  check_cpu(collective, shard);
  check_cpu(collective, full);
  check_shard_full(collective, shard, full);
  check_reduce_op(collective, full, op);
  const int n = mpi_count(*this, collective, shard.numel());
  const torch::Tensor send = widened(full);  // [size * S]
  const torch::Tensor recv = is_half(shard.scalar_type()) ? torch::empty_like(shard, torch::kFloat32) : shard;  // [S]
  MPI_Request request;
  CVX_MPI(MPI_Ireduce_scatter_block(send.data_ptr(), recv.data_ptr(), n, mpi_type(recv.scalar_type()), mpi_op(op),
                                    comm_, &request));
  count(CommStats::reduce_scatter, full.nbytes());
  return std::make_shared<MpiWork>(WorkInfo{collective, full.nbytes(), rank_, size_, name(), options_.timeout_s},
                                   request, std::vector<torch::Tensor>{full, shard, send, recv},
                                   finish_reduction(recv, shard, op, size_));
}

WorkPtr MpiCommunicator::all_reduce(const torch::Tensor& tensor, ReduceOp op) {
  const char* const collective = "all_reduce";
  check_cpu(collective, tensor);
  check_tensor(collective, tensor);
  check_reduce_op(collective, tensor, op);
  const int n = mpi_count(*this, collective, tensor.numel());
  const torch::Tensor buffer = widened(tensor);
  MPI_Request request;
  CVX_MPI(
      MPI_Iallreduce(MPI_IN_PLACE, buffer.data_ptr(), n, mpi_type(buffer.scalar_type()), mpi_op(op), comm_, &request));
  count(CommStats::all_reduce, tensor.nbytes());
  return std::make_shared<MpiWork>(WorkInfo{collective, tensor.nbytes(), rank_, size_, name(), options_.timeout_s},
                                   request, std::vector<torch::Tensor>{tensor, buffer},
                                   finish_reduction(buffer, tensor, op, size_));
}

WorkPtr MpiCommunicator::broadcast(const torch::Tensor& tensor, int root) {
  const char* const collective = "broadcast";
  check_cpu(collective, tensor);
  check_tensor(collective, tensor);
  check_root(collective, root);
  const int n = mpi_count(*this, collective, tensor.numel());
  MPI_Request request;
  CVX_MPI(MPI_Ibcast(tensor.data_ptr(), n, mpi_type(tensor.scalar_type()), root, comm_, &request));
  count(CommStats::broadcast, rank_ == root ? tensor.nbytes() : 0);
  return std::make_shared<MpiWork>(WorkInfo{collective, tensor.nbytes(), rank_, size_, name(), options_.timeout_s},
                                   request, std::vector<torch::Tensor>{tensor}, nullptr);
}

WorkPtr MpiCommunicator::all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                                    const torch::Tensor& output, const std::vector<int64_t>& recv_counts) {
  const char* const collective = "all_to_all";
  check_cpu(collective, input);
  check_cpu(collective, output);
  check_all_to_all(input, send_counts, output, recv_counts);
  mpi_count(*this, collective, input.numel());  // offsets are ints too
  mpi_count(*this, collective, output.numel());
  // MPI reads the count and offset arrays until the transfer completes: the Work keeps them.
  struct Layout {
    std::vector<int> send_counts, send_offsets, recv_counts, recv_offsets;
  };
  auto layout = std::make_shared<Layout>();
  int send_at = 0, recv_at = 0;
  for (int r = 0; r < size_; ++r) {
    layout->send_counts.push_back(static_cast<int>(send_counts[static_cast<size_t>(r)]));
    layout->send_offsets.push_back(send_at);
    send_at += layout->send_counts.back();
    layout->recv_counts.push_back(static_cast<int>(recv_counts[static_cast<size_t>(r)]));
    layout->recv_offsets.push_back(recv_at);
    recv_at += layout->recv_counts.back();
  }
  const MPI_Datatype type = mpi_type(input.scalar_type());
  MPI_Request request;
  CVX_MPI(MPI_Ialltoallv(input.data_ptr(), layout->send_counts.data(), layout->send_offsets.data(), type,
                         output.data_ptr(), layout->recv_counts.data(), layout->recv_offsets.data(), type, comm_,
                         &request));
  const uint64_t element = static_cast<uint64_t>(input.element_size());
  const uint64_t to_others =
      (static_cast<uint64_t>(input.numel()) - static_cast<uint64_t>(send_counts[static_cast<size_t>(rank_)])) * element;
  count(CommStats::all_to_all, to_others);
  return std::make_shared<MpiWork>(WorkInfo{collective, input.nbytes(), rank_, size_, name(), options_.timeout_s},
                                   request, std::vector<torch::Tensor>{input, output}, [layout] {});
}

void MpiCommunicator::barrier() {
  MPI_Request request;
  CVX_MPI(MPI_Ibarrier(comm_, &request));
  MpiWork(WorkInfo{"barrier", 0, rank_, size_, name(), options_.timeout_s}, request, {}, nullptr).wait();
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& group) {
  MPI_Comm sub = MPI_COMM_NULL;
  CVX_MPI(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub));
  if (sub == MPI_COMM_NULL) return nullptr;
  // The new communicator works on its own duplicate; `sub` is only the split's result.
  std::unique_ptr<Communicator> result;
  try {
    result = std::make_unique<MpiCommunicator>(sub, group, options_);
  } catch (...) {
    MPI_Comm_free(&sub);
    throw;
  }
  CVX_MPI(MPI_Comm_free(&sub));
  return result;
}

}  // namespace cvx
