// Collectives on CUDA tensors over NCCL. This header carries no CUDA or NCCL types, so every build
// includes it; the communicator itself lives in src/dist/nccl_communicator.cpp and is reached
// through make_nccl_communicator (a build without NCCL throws there).
//
// Ordering: each collective runs on the communicator's own stream after the work already queued
// on the caller's current compute stream; Work::wait() makes the *current* compute stream wait for
// it without blocking the host. The Work keeps its tensors until it is waited (or dropped) and the
// collective has finished on the GPU, so the caching allocator never hands their memory to new
// work while NCCL still uses it.
//
// Dtypes: fp32, fp64, fp16, bf16, int32, int64. NCCL reduces fp16/bf16 natively (its ring rounds at
// every step, unlike MpiCommunicator's single rounding from fp32) and averages with ncclAvg.
// barrier() is a one-element all-reduce on the device that the host waits for: it covers every
// collective issued before it, and the watchdog's timeout applies to it like to any other.
// split() runs MPI_Comm_split on the bootstrap communicator and initialises a fresh NCCL
// communicator in each group (a new unique id broadcast over MPI): that works with every NCCL
// version, where ncclCommSplit needs >= 2.18; groups are made once at setup, so the extra
// initialisation is not on any hot path.
//
// Failure model: a watchdog thread per communicator polls, every ~100 ms, the outstanding
// collectives and ncclCommGetAsyncError. An asynchronous error, or a collective older than
// options.timeout_s, is logged (collective, rank, group, seconds), the NCCL communicator is
// aborted and the job ends with MPI_Abort.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "cvx/dist/communicator.h"

namespace cvx {

// True when this build has NCCL compiled in (not whether a GPU is present).
bool nccl_available();

// Collective over `bootstrap` (which it duplicates): rank 0 creates the NCCL unique id, MPI
// broadcasts it, every rank joins on CUDA device `device_index`. name() = "nccl:<group>".
// Throws ConfigError in builds without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device_index, const std::string& group,
                                                     CommunicatorOptions options = {});

}  // namespace cvx
