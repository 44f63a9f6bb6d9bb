// The frame every cvx program runs in: MPI bootstrap, logging, thread setup, and one place that
// turns an exception on any rank into a logged error and MPI_Abort (no rank is left hanging).
#pragma once
#include <functional>
#include <string>

#include <torch/torch.h>

#include "cvx/core/mpi_env.h"

namespace cvx {

struct AppContext {
  std::string name;  // program name, e.g. "cvx_train"
  int argc = 0;
  char** argv = nullptr;
  const MpiWorld* mpi = nullptr;
};

// Runs body(ctx) with MPI initialised and console logging set up; returns the process exit code.
// An exception on any rank is logged with that rank and aborts the whole job.
int run_app(const std::string& name, int argc, char** argv, const std::function<int(AppContext&)>& body);

// The device this rank computes on: with CUDA, one GPU per rank chosen by the node-local rank;
// otherwise the CPU.
torch::Device rank_device(const MpiWorld& mpi);

// Number of intra-op threads for libtorch: `requested` if > 0, else OMP_NUM_THREADS, else the
// cores this process may use divided among the ranks sharing the node.
int configure_torch_threads(int requested, const MpiWorld& mpi);

}  // namespace cvx

#include <filesystem>

namespace cvx {
class Options;
struct GeneralConfig;

// Parses the program's options. On --help, rank 0 prints the help and this returns false (the
// program exits 0). Otherwise applies the general options: log level and ranks, torch threads.
bool parse_and_configure(AppContext& ctx, Options& options, GeneralConfig& general);

// The run folder: rank 0 creates `dir`, writes the resolved configuration to `dir/config.ini`
// and prints it; every rank adds its log file there (rank 0 always, others with log_all_ranks).
void open_run_folder(const AppContext& ctx, const Options& options, const std::filesystem::path& dir);
}  // namespace cvx
