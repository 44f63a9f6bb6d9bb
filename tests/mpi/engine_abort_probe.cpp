// Probe for the engine's failure path: two ranks train a tiny model through the sharded engine;
// in the second step rank 1 throws while recomputing a block in backward, when rank 0 is inside
// the engine's collectives. run_app must abort the whole job (no rank left waiting).
#include "cvx/app/app.h"
#include "cvx/core/error.h"
#include "cvx/dist/mpi_communicator.h"
#include "engine_test_util.h"

int main(int argc, char** argv) {
  return cvx::run_app("engine_abort_probe", argc, argv, [](cvx::AppContext& ctx) {
    cvx::MpiCommunicator world(MPI_COMM_WORLD, "world");
    cvx::test::EngineRunOptions o;
    o.global_batch = 2 * world.size();
    cvx::test::EngineRun run(world, o);
    run.step(0);
    const auto inner = run.engine().runner();
    bool forward_done = false;
    run.model()->set_block_runner([&](int64_t i, const cvx::UnitFn& fn, const torch::autograd::variable_list& in) {
      auto failing = [&, fn, i](const torch::autograd::variable_list& x) {
        // Called once in forward and again in backward (recomputation) for every block.
        if (ctx.mpi->rank == 1 && forward_done && i == 2) CVX_THROW("deliberate failure on rank 1");
        if (i == 3) forward_done = true;
        return fn(x);
      };
      return inner(i, failing, in);
    });
    run.step(1);
    return 0;
  });
}
