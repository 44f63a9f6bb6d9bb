#include "cvx/core/checked_call.h"

#include <hdf5.h>
#include <mpi.h>

#include <vector>

extern "C" {
#include <libavutil/error.h>
}

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

namespace {
herr_t collect_hdf5_error(unsigned n, const H5E_error2_t* err, void* client) {
  auto* lines = static_cast<std::vector<std::string>*>(client);
  std::string line = err->desc != nullptr ? err->desc : "";
  if (err->func_name != nullptr) line = std::string(err->func_name) + ": " + line;
  lines->push_back(line);
  (void)n;
  return 0;
}
}  // namespace

std::string hdf5_error_stack() {
  std::vector<std::string> lines;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_hdf5_error, &lines);
  H5Eclear2(H5E_DEFAULT);
  if (lines.empty()) return "no HDF5 error details";
  std::string out;
  // The innermost (first, walking upward) entries say what actually went wrong.
  for (size_t i = 0; i < lines.size() && i < 3; ++i) {
    if (i > 0) out += " <- ";
    out += lines[i];
  }
  return out;
}

std::string av_error_string(int code) {
  char buffer[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buffer, sizeof(buffer));
  return std::string(buffer) + " (code " + std::to_string(code) + ")";
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
