// Probe for the abort path: rank 1 fails while the others wait in a collective. run_app must log
// the failure with the rank and abort the whole job instead of leaving the others hanging.
#include <mpi.h>

#include "cvx/app/app.h"
#include "cvx/core/error.h"

int main(int argc, char** argv) {
  return cvx::run_app("fail_one_rank", argc, argv, [](cvx::AppContext& ctx) {
    if (ctx.mpi->rank == 1) CVX_THROW_AS(cvx::FormatError, "deliberate failure on rank 1");
    MPI_Barrier(ctx.mpi->world);  // never completes: rank 1 is gone
    return 0;
  });
}
