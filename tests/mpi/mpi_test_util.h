// Helpers of the MPI suite.
#pragma once
#include <filesystem>
#include <string>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"
#include "test_util.h"

namespace cvx::test {

// A fresh scratch folder made by rank 0; every rank of the world gets its path.
inline std::filesystem::path shared_scratch(const std::string& name) {
  std::string dir;
  if (cvx::mpi_world().rank == 0) dir = scratch_dir(name).string();
  int length = static_cast<int>(dir.size());
  CVX_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD));
  dir.resize(length);
  CVX_MPI(MPI_Bcast(dir.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD));
  return dir;
}

}  // namespace cvx::test
