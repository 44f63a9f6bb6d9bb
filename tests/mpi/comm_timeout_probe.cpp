// Probe for the collective timeout: rank 1 stays alive but never joins, rank 0 waits in an
// all_gather with a 2 s timeout. The wait must log the collective and abort the whole job rather
// than leave rank 0 waiting for the peer forever.
#include <chrono>
#include <thread>

#include "cvx/app/app.h"
#include "cvx/dist/mpi_communicator.h"

int main(int argc, char** argv) {
  return cvx::run_app("comm_timeout_probe", argc, argv, [](cvx::AppContext& ctx) {
    cvx::CommunicatorOptions options;
    options.timeout_s = 2;
    cvx::MpiCommunicator comm(ctx.mpi->world, "world", options);
    if (comm.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::seconds(120));  // stuck, not dead: no MPI error to notice
      return 0;
    }
    const auto shard = torch::ones({5});
    const auto full = torch::empty({comm.size() * 5});
    comm.all_gather(shard, full)->wait();
    return 0;
  });
}
