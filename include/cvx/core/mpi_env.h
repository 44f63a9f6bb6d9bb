// MPI bootstrap: world and node-local ranks. Works under mpirun/srun and as a singleton.
#pragma once
#include <mpi.h>

#include <string>

namespace cvx {

struct MpiWorld {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes on this node (MPI_COMM_TYPE_SHARED)
  int local_size = 1;
  int num_nodes = 1;
  int thread_level = 0;  // what MPI_Init_thread provided
  MPI_Comm world = MPI_COMM_WORLD;
  MPI_Comm node = MPI_COMM_NULL;
  std::string hostname;
};

// Initialises MPI with MPI_THREAD_MULTIPLE (required: data loading, logging and NCCL progress
// threads may call MPI) and discovers the node layout. Idempotent.
const MpiWorld& mpi_init(int* argc, char*** argv);
// The world set up by mpi_init; throws if it was not called.
const MpiWorld& mpi_world();
bool mpi_initialised();
// Finalises MPI (no-op if never initialised or already finalised).
void mpi_finalize();
// Aborts every rank of the job: a failing rank must not leave the others waiting in a collective.
[[noreturn]] void mpi_abort(int code);

}  // namespace cvx
