#include "cvx/core/checked_call.h"

#include <mpi.h>

#include <vector>

#ifdef CVX_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace cvx {

std::string mpi_error_string(int code) {
  char buffer[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, buffer, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(buffer, static_cast<size_t>(length)) + " (code " + std::to_string(code) + ")";
}

std::string nccl_error_string(int code) {
#ifdef CVX_WITH_CUDA
  return std::string(ncclGetErrorString(static_cast<ncclResult_t>(code))) + " (code " + std::to_string(code) + ")";
#else
  return "NCCL error code " + std::to_string(code);
#endif
}

std::string cuda_error_string(int code) {
#ifdef CVX_WITH_CUDA
  return std::string(cudaGetErrorString(static_cast<cudaError_t>(code))) + " (code " + std::to_string(code) + ")";
#else
  return "CUDA error code " + std::to_string(code);
#endif
}

}  // namespace cvx
