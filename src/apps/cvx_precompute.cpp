#include "cvx/app/app.h"
#include "cvx/core/log.h"

int main(int argc, char** argv) {
  return cvx::run_app("cvx_precompute", argc, argv, [](cvx::AppContext& ctx) {
    CVX_INFO << ctx.name << ": world size " << ctx.mpi->size;
    return 0;
  });
}
