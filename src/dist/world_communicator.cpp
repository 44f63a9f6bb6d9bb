#include "cvx/dist/world_communicator.h"

#include "cvx/core/error.h"
#include "cvx/dist/mpi_communicator.h"
#include "cvx/dist/nccl_communicator.h"

namespace cvx {

std::string resolve_backend(const std::string& backend, const torch::Device& device) {
  if (backend == "auto") return device.is_cuda() && nccl_available() ? "nccl" : "mpi";
  if (backend == "nccl") {
    CVX_CHECK_AS(ConfigError, device.is_cuda(), "[parallel] backend = nccl needs CUDA devices, but this rank ",
                 "computes on the CPU; use backend = mpi (or auto)");
    CVX_CHECK_AS(ConfigError, nccl_available(), "[parallel] backend = nccl, but this cvx build has no NCCL; ",
                 "rebuild against a CUDA libtorch with NCCL (README: Building on a GPU cluster) or use backend = mpi");
    return "nccl";
  }
  CVX_CHECK_AS(ConfigError, backend == "mpi", "[parallel] backend must be auto, nccl or mpi (got ", quote(backend),
               ")");
  CVX_CHECK_AS(ConfigError, !device.is_cuda(), "[parallel] backend = mpi moves CPU tensors only, but this rank ",
               "computes on ", device.str(), "; use backend = nccl (or auto)");
  return "mpi";
}

std::unique_ptr<Communicator> make_communicator(const ParallelConfig& config, MPI_Comm comm,
                                                const torch::Device& device, const std::string& group) {
  CommunicatorOptions options;
  options.timeout_s = static_cast<double>(config.timeout_s);
  if (resolve_backend(config.backend, device) == "nccl")
    return make_nccl_communicator(comm, device.index() < 0 ? 0 : device.index(), group, options);
  return std::make_unique<MpiCommunicator>(comm, group, options);
}

}  // namespace cvx
