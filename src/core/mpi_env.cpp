#include "cvx/core/mpi_env.h"

#include <unistd.h>

#include <cstdlib>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"

namespace cvx {
namespace {
MpiWorld g_world;
bool g_initialised = false;
}  // namespace

const MpiWorld& mpi_init(int* argc, char*** argv) {
  if (g_initialised) return g_world;
  int already = 0;
  MPI_Initialized(&already);
  int provided = 0;
  if (!already) {
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) CVX_THROW_AS(SystemError, "MPI_Init_thread failed: ", mpi_error_string(rc));
  } else {
    MPI_Query_thread(&provided);
  }
  // Errors come back as codes so CVX_MPI can turn them into exceptions with a message.
  CVX_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  g_world.thread_level = provided;
  CVX_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank));
  CVX_MPI(MPI_Comm_size(MPI_COMM_WORLD, &g_world.size));
  if (provided < MPI_THREAD_MULTIPLE) {
    CVX_THROW_AS(SystemError, "the MPI library provides thread level ", provided,
                 " but cvx needs MPI_THREAD_MULTIPLE (", MPI_THREAD_MULTIPLE,
                 "); use an MPI built with thread support (OpenMPI: --enable-mpi-thread-multiple)");
  }
  CVX_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL, &g_world.node));
  CVX_MPI(MPI_Comm_set_errhandler(g_world.node, MPI_ERRORS_RETURN));
  CVX_MPI(MPI_Comm_rank(g_world.node, &g_world.local_rank));
  CVX_MPI(MPI_Comm_size(g_world.node, &g_world.local_size));
  int leader = g_world.local_rank == 0 ? 1 : 0;
  CVX_MPI(MPI_Allreduce(&leader, &g_world.num_nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  g_world.hostname = host;
  g_initialised = true;
  return g_world;
}

const MpiWorld& mpi_world() {
  CVX_CHECK(g_initialised, "mpi_world() called before mpi_init()");
  return g_world;
}

bool mpi_initialised() { return g_initialised; }

void mpi_finalize() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return;
  if (g_world.node != MPI_COMM_NULL) MPI_Comm_free(&g_world.node);
  MPI_Finalize();
  g_initialised = false;
}

void mpi_abort(int code) {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (initialised && !finalised) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace cvx
