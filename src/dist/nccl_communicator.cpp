#include "cvx/dist/nccl_communicator.h"

#include "cvx/core/error.h"

#ifdef CVX_WITH_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>
#ifdef CVX_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include "cvx/core/checked_call.h"
#include "cvx/core/log.h"
#include "cvx/core/mpi_env.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "cvx needs NCCL >= 2.10 (ncclAvg, ncclBfloat16)"
#endif
#endif

namespace cvx {

#ifdef CVX_WITH_NCCL
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kFailureExitCode = 1;

// The stream the caller computes on: collectives start after its queued work, and wait() queues
// the caller's later work after the collective.
cudaStream_t compute_stream(int device) {
#ifdef CVX_WITH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  // Compile-only builds against a CPU libtorch have no c10 streams (and no CUDA tensors to run on).
  (void)device;
  return cudaStreamLegacy;
#endif
}

// NCCL and stream/event creation act on the current device; callers may have another one set.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    CVX_CUDA(cudaGetDevice(&previous_));
    if (previous_ != device) CVX_CUDA(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

ncclDataType_t nccl_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kFloat16: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt32: return ncclInt32;
    case torch::kInt64: return ncclInt64;
    default: CVX_THROW("no NCCL datatype for ", type);  // check_tensor rejects these earlier
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
  }
  return ncclSum;
}

// One collective in flight, shared by its Work and the watchdog.
struct Pending {
  const char* collective = "";
  uint64_t bytes = 0;
  Clock::time_point start;
  cudaEvent_t done = nullptr;
  std::vector<torch::Tensor> tensors;  // released by the watchdog once finished and claimed
  std::atomic<bool> claimed{false};    // waited, or its Work dropped
  bool finished = false;               // the watchdog has seen `done` (watchdog only)
  ~Pending() {
    if (done != nullptr) cudaEventDestroy(done);  // legal even if still pending
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Pending> pending, int device) : pending_(std::move(pending)), device_(device) {}
  ~NcclWork() override { pending_->claimed = true; }

  void wait() override {
    if (waited_) return;
    DeviceScope scope(device_);
    CVX_CUDA(cudaStreamWaitEvent(compute_stream(device_), pending_->done, 0));
    waited_ = true;
    pending_->claimed = true;
  }

  bool completed() override {
    const cudaError_t rc = cudaEventQuery(pending_->done);
    if (rc == cudaErrorNotReady) return false;
    CVX_CUDA(rc);
    return true;
  }

  // Blocks the host until the collective has finished on the GPU (the watchdog bounds the wait).
  void synchronize() {
    auto nap = std::chrono::microseconds(20);
    while (!completed()) {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }

 private:
  std::shared_ptr<Pending> pending_;
  int device_;
  bool waited_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(MPI_Comm bootstrap, int device, const std::string& group, CommunicatorOptions options)
      : Communicator("nccl:" + group, options), device_(device) {
    CVX_CHECK_AS(ConfigError, options.timeout_s > 0, "communicator ", name(),
                 ": the collective timeout must be > 0 s (got ", options.timeout_s, ")");
    CVX_CHECK(bootstrap != MPI_COMM_NULL, "communicator ", name(), ": MPI_COMM_NULL given");
    try {
      CVX_MPI(MPI_Comm_dup(bootstrap, &bootstrap_));
      CVX_MPI(MPI_Comm_set_errhandler(bootstrap_, MPI_ERRORS_RETURN));
      CVX_MPI(MPI_Comm_rank(bootstrap_, &rank_));
      CVX_MPI(MPI_Comm_size(bootstrap_, &size_));
      DeviceScope scope(device_);
      ncclUniqueId id;
      if (rank_ == 0) CVX_NCCL(ncclGetUniqueId(&id));
      CVX_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap_));
      CVX_NCCL(ncclCommInitRank(&comm_, size_, id, rank_));
      CVX_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      CVX_CUDA(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      CVX_CUDA(cudaMalloc(&scratch_, sizeof(int32_t)));
      watchdog_ = std::thread([this] { watch(); });
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclCommunicator() override {
    // Queued collectives finish first, while the watchdog still ends the job if a peer is gone.
    if (stream_ != nullptr) {
      const cudaError_t rc = cudaStreamSynchronize(stream_);
      if (rc != cudaSuccess) CVX_ERROR << "closing " << name() << ": " << cuda_error_string(rc);
    }
    release();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  WorkPtr all_gather(const torch::Tensor& shard, const torch::Tensor& full) override {
    const char* const collective = "all_gather";
    check_device(collective, shard);
    check_device(collective, full);
    check_shard_full(collective, shard, full);
    const ncclDataType_t type = nccl_type(shard.scalar_type());
    auto work = launch(collective, full.nbytes(), {shard, full}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclAllGather(shard.data_ptr(), full.data_ptr(), shard.numel(), type, comm_, stream));
    });
    count(CommStats::all_gather, full.nbytes());
    return work;
  }

  WorkPtr reduce_scatter(const torch::Tensor& full, const torch::Tensor& shard, ReduceOp op) override {
    const char* const collective = "reduce_scatter";
    check_device(collective, shard);
    check_device(collective, full);
    check_shard_full(collective, shard, full);
    check_reduce_op(collective, full, op);
    const ncclDataType_t type = nccl_type(shard.scalar_type());
    auto work = launch(collective, full.nbytes(), {full, shard}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclReduceScatter(full.data_ptr(), shard.data_ptr(), shard.numel(), type, nccl_op(op), comm_, stream));
    });
    count(CommStats::reduce_scatter, full.nbytes());
    return work;
  }

  WorkPtr all_reduce(const torch::Tensor& tensor, ReduceOp op) override {
    const char* const collective = "all_reduce";
    check_device(collective, tensor);
    check_tensor(collective, tensor);
    check_reduce_op(collective, tensor, op);
    const ncclDataType_t type = nccl_type(tensor.scalar_type());
    auto work = launch(collective, tensor.nbytes(), {tensor}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, nccl_op(op), comm_, stream));
    });
    count(CommStats::all_reduce, tensor.nbytes());
    return work;
  }

  WorkPtr broadcast(const torch::Tensor& tensor, int root) override {
    const char* const collective = "broadcast";
    check_device(collective, tensor);
    check_tensor(collective, tensor);
    check_root(collective, root);
    const ncclDataType_t type = nccl_type(tensor.scalar_type());
    auto work = launch(collective, tensor.nbytes(), {tensor}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, root, comm_, stream));
    });
    count(CommStats::broadcast, rank_ == root ? tensor.nbytes() : 0);
    return work;
  }

  // Grouped point-to-point sends and receives (ncclAllToAll does not exist as such; grouped
  // send/recv is NCCL's documented all-to-all, uneven counts included).
  WorkPtr all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts, const torch::Tensor& output,
                     const std::vector<int64_t>& recv_counts) override {
    const char* const collective = "all_to_all";
    check_device(collective, input);
    check_device(collective, output);
    check_all_to_all(input, send_counts, output, recv_counts);
    const ncclDataType_t type = nccl_type(input.scalar_type());
    const int64_t element = input.element_size();
    auto work = launch(collective, input.nbytes(), {input, output}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclGroupStart());
      int64_t send_at = 0, recv_at = 0;
      for (int r = 0; r < size_; ++r) {
        const int64_t send = send_counts[static_cast<size_t>(r)], recv = recv_counts[static_cast<size_t>(r)];
        if (send > 0)
          CVX_NCCL(ncclSend(static_cast<const char*>(input.data_ptr()) + send_at * element, static_cast<size_t>(send),
                            type, r, comm_, stream));
        if (recv > 0)
          CVX_NCCL(ncclRecv(static_cast<char*>(output.data_ptr()) + recv_at * element, static_cast<size_t>(recv), type,
                            r, comm_, stream));
        send_at += send;
        recv_at += recv;
      }
      CVX_NCCL(ncclGroupEnd());
    });
    count(CommStats::all_to_all,
          static_cast<uint64_t>((input.numel() - send_counts[static_cast<size_t>(rank_)]) * element));
    return work;
  }

  // A one-element all-reduce the host waits for: on the comm stream it follows every collective
  // issued before, and it completes only once every peer has issued it. Not counted in the stats.
  void barrier() override {
    launch("barrier", 0, {}, [&](cudaStream_t stream) {
      CVX_NCCL(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream));
    })->synchronize();
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& group) override {
    MPI_Comm sub = MPI_COMM_NULL;
    CVX_MPI(MPI_Comm_split(bootstrap_, color < 0 ? MPI_UNDEFINED : color, key, &sub));
    if (sub == MPI_COMM_NULL) return nullptr;
    std::unique_ptr<Communicator> result;
    try {
      result = std::make_unique<NcclCommunicator>(sub, device_, group, options_);
    } catch (...) {
      MPI_Comm_free(&sub);
      throw;
    }
    CVX_MPI(MPI_Comm_free(&sub));
    return result;
  }

 private:
  void check_device(const char* collective, const torch::Tensor& tensor) const {
    CVX_CHECK(tensor.defined(), collective, " on ", name(), ": undefined tensor");
    CVX_CHECK(tensor.device().is_cuda() && tensor.device().index() == device_, collective, " on ", name(),
              ": NCCL collectives take tensors on cuda:", device_, ", got one on ", tensor.device(),
              "; use the mpi backend for CPU tensors");
  }

  // Runs `issue` on the comm stream after the work queued so far on the compute stream, records
  // its done event and hands it to the watchdog.
  std::shared_ptr<NcclWork> launch(const char* collective, uint64_t bytes, std::vector<torch::Tensor> tensors,
                                   const std::function<void(cudaStream_t)>& issue) {
    DeviceScope scope(device_);
    auto pending = std::make_shared<Pending>();
    pending->collective = collective;
    pending->bytes = bytes;
    pending->tensors = std::move(tensors);
    CVX_CUDA(cudaEventCreateWithFlags(&pending->done, cudaEventDisableTiming));
    CVX_CUDA(cudaEventRecord(ready_, compute_stream(device_)));
    CVX_CUDA(cudaStreamWaitEvent(stream_, ready_, 0));
    issue(stream_);
    CVX_CUDA(cudaEventRecord(pending->done, stream_));
    // From issue, not from when the GPU reaches it: the timeout is meant for hangs, far above
    // any step's compute.
    pending->start = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_.push_back(pending);
    }
    return std::make_shared<NcclWork>(std::move(pending), device_);
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    try {
      CVX_CUDA(cudaSetDevice(device_));
      while (!stopping_) {
        wake_.wait_for(lock, std::chrono::milliseconds(100));
        ncclResult_t async = ncclSuccess;
        CVX_NCCL(ncclCommGetAsyncError(comm_, &async));
        if (async != ncclSuccess)
          fail(detail::concat("NCCL reported an asynchronous error (", nccl_error_string(async), ")"));
        const auto now = Clock::now();
        for (auto it = pending_.begin(); it != pending_.end();) {
          Pending& p = **it;
          if (!p.finished) {
            const cudaError_t rc = cudaEventQuery(p.done);
            if (rc != cudaErrorNotReady) CVX_CUDA(rc);
            p.finished = rc == cudaSuccess;
            const double age_s = std::chrono::duration<double>(now - p.start).count();
            if (!p.finished && age_s > options_.timeout_s) {
              fail(detail::concat(p.collective, " of ", p.bytes, " bytes timed out after ", options_.timeout_s,
                                  " s (a peer is dead or stuck)"));
            }
          }
          if (p.finished && p.claimed) {
            p.tensors.clear();
            it = pending_.erase(it);
          } else {
            ++it;
          }
        }
      }
    } catch (const Error& e) {
      fail(e.message());
    }
  }

  [[noreturn]] void fail(const std::string& reason) {
    CVX_ERROR << reason << " on rank " << rank_ << " of group " << name() << " (" << size_
              << " ranks): aborting the NCCL communicator and the job";
    log::flush();
    ncclCommAbort(comm_);
    mpi_abort(kFailureExitCode);
  }

  // Frees what the constructor made, in reverse; never throws (destructor and failed construction).
  void release() noexcept {
    if (watchdog_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
      }
      wake_.notify_all();
      watchdog_.join();
    }
    pending_.clear();
    try {
      if (comm_ != nullptr) CVX_NCCL(ncclCommDestroy(comm_));
      if (ready_ != nullptr) CVX_CUDA(cudaEventDestroy(ready_));
      if (stream_ != nullptr) CVX_CUDA(cudaStreamDestroy(stream_));
      if (scratch_ != nullptr) CVX_CUDA(cudaFree(scratch_));
    } catch (const Error& e) {
      CVX_ERROR << "closing " << name() << ": " << e.message();
    }
    comm_ = nullptr;
    ready_ = nullptr;
    stream_ = nullptr;
    scratch_ = nullptr;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (bootstrap_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&bootstrap_);
  }

  MPI_Comm bootstrap_ = MPI_COMM_NULL;
  int device_;
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // non-blocking: never serialised with the legacy default stream
  cudaEvent_t ready_ = nullptr;    // re-recorded per collective: issue from one thread at a time
  void* scratch_ = nullptr;        // the barrier's one int32 on the device
  std::mutex mutex_;               // guards pending_ and stopping_
  std::condition_variable wake_;
  bool stopping_ = false;
  std::list<std::shared_ptr<Pending>> pending_;
  std::thread watchdog_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device_index, const std::string& group,
                                                     CommunicatorOptions options) {
  CVX_CHECK(device_index >= 0, "make_nccl_communicator: device index ", device_index, " is negative");
  return std::make_unique<NcclCommunicator>(bootstrap, device_index, group, options);
}

#else  // no NCCL in this build

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm, int, const std::string&, CommunicatorOptions) {
  CVX_THROW_AS(ConfigError,
               "this cvx build has no NCCL (libtorch without CUDA or NCCL not found at configure time); use "
               "[parallel] backend = mpi, or rebuild against a CUDA libtorch with NCCL (see README: Building on a "
               "GPU cluster)");
}

#endif

}  // namespace cvx
