// The communicator a run shards over, from [parallel] backend: "auto" is NCCL for CUDA devices in
// a build with NCCL and MPI otherwise; "nccl" on the CPU, or "mpi" with CUDA tensors (the MPI
// backend moves CPU tensors only), are refused with the fix.
#pragma once
#include <mpi.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "cvx/dist/communicator.h"
#include "cvx/dist/parallel_config.h"

namespace cvx {

// "nccl" or "mpi": what `backend` resolves to for tensors on `device`. Throws ConfigError.
std::string resolve_backend(const std::string& backend, const torch::Device& device);

// Collective over `comm`.
std::unique_ptr<Communicator> make_communicator(const ParallelConfig& config, MPI_Comm comm,
                                                const torch::Device& device, const std::string& group = "world");

}  // namespace cvx
