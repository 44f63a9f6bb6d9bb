// Wrappers for every call into MPI, HDF5, FFmpeg, NCCL and CUDA: a failure becomes a cvx::SystemError
// naming the call, the library's own description of the error, and the source location.
#pragma once
#include <string>

#include "cvx/core/error.h"

namespace cvx {
std::string mpi_error_string(int code);
// HDF5 keeps an error stack; this renders its innermost entries (and clears it).
std::string hdf5_error_stack();
std::string av_error_string(int code);
std::string nccl_error_string(int code);
std::string cuda_error_string(int code);

namespace detail {
template <class T>
T check_hdf5(T value, const char* expr, const char* file, int line) {
  if (value < 0) {
    throw SystemError(concat("HDF5 call ", expr, " failed: ", hdf5_error_stack()), short_path(file), line);
  }
  return value;
}
inline int check_av(int value, const char* expr, const char* file, int line) {
  if (value < 0) {
    throw SystemError(concat("FFmpeg call ", expr, " failed: ", av_error_string(value)), short_path(file), line);
  }
  return value;
}
}  // namespace detail
}  // namespace cvx

// MPI: every MPI function returns MPI_SUCCESS (0) or an error code (communicators use MPI_ERRORS_RETURN).
#define CVX_MPI(call)                                                                                      \
  do {                                                                                                     \
    const int cvx_rc_ = (call);                                                                            \
    if (cvx_rc_ != 0) {                                                                                    \
      CVX_THROW_AS(::cvx::SystemError, "MPI call ", #call, " failed: ", ::cvx::mpi_error_string(cvx_rc_)); \
    }                                                                                                      \
  } while (0)

// HDF5: hid_t / herr_t / htri_t, negative on failure; the expression's value is passed through.
#define CVX_H5(call) ::cvx::detail::check_hdf5((call), #call, __FILE__, __LINE__)

// FFmpeg: negative AVERROR codes on failure; non-negative results pass through.
#define CVX_AV(call) ::cvx::detail::check_av((call), #call, __FILE__, __LINE__)

// NCCL and CUDA: only compiled where the headers exist.
#define CVX_NCCL(call)                                                                                       \
  do {                                                                                                       \
    const int cvx_rc_ = static_cast<int>(call);                                                              \
    if (cvx_rc_ != 0) {                                                                                      \
      CVX_THROW_AS(::cvx::SystemError, "NCCL call ", #call, " failed: ", ::cvx::nccl_error_string(cvx_rc_)); \
    }                                                                                                        \
  } while (0)
#define CVX_CUDA(call)                                                                                       \
  do {                                                                                                       \
    const int cvx_rc_ = static_cast<int>(call);                                                              \
    if (cvx_rc_ != 0) {                                                                                      \
      CVX_THROW_AS(::cvx::SystemError, "CUDA call ", #call, " failed: ", ::cvx::cuda_error_string(cvx_rc_)); \
    }                                                                                                        \
  } while (0)
