#include "cvx/app/app.h"

#include <sched.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/core/host_memory.h"
#include "cvx/core/log.h"

namespace cvx {
namespace {
std::string describe(const Error& e) {
  if (e.where().empty()) return e.message();
  return e.message() + " [" + e.where() + "]";
}

// Torch errors carry a multi-line backtrace; the first line is the message.
std::string first_line(const std::string& text) {
  const auto nl = text.find('\n');
  return nl == std::string::npos ? text : text.substr(0, nl);
}
}  // namespace

torch::Device rank_device(const MpiWorld& mpi) {
  if (!torch::cuda::is_available()) return torch::kCPU;
  const int gpus = static_cast<int>(torch::cuda::device_count());
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(mpi.local_rank % gpus)};
}

int configure_torch_threads(int requested, const MpiWorld& mpi) {
  int threads = requested;
  if (threads <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) threads = std::atoi(env);
  }
  if (threads <= 0) {
    cpu_set_t set;
    int cores = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
    // With several ranks per node sharing the same affinity mask, split the cores between them.
    threads = std::max(1, cores / std::max(1, mpi.local_size));
  }
  torch::set_num_threads(threads);
  return threads;
}

int run_app(const std::string& name, int argc, char** argv, const std::function<int(AppContext&)>& body) {
  tune_host_allocator();
  const MpiWorld* world = nullptr;
  try {
    world = &mpi_init(&argc, &argv);
  } catch (const Error& e) {
    std::cerr << name << ": error: " << describe(e) << std::endl;
    return 1;
  }
  log::LogSettings settings;
  settings.rank = world->rank;
  settings.world_size = world->size;
  log::init(settings);

  AppContext ctx;
  ctx.name = name;
  ctx.argc = argc;
  ctx.argv = argv;
  ctx.mpi = world;
  std::string failure;
  int code = 0;
  try {
    code = body(ctx);
  } catch (const Error& e) {
    failure = describe(e);
  } catch (const c10::Error& e) {
    failure = "torch: " + first_line(e.what());
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    CVX_ERROR << name << " failed on rank " << world->rank << "/" << world->size << " (" << world->hostname
              << "): " << failure;
    log::flush();
    if (world->size > 1) mpi_abort(1);
    mpi_finalize();
    return 1;
  }
  log::flush();
  mpi_finalize();
  return code;
}

}  // namespace cvx

#include "cvx/app/general_config.h"
#include "cvx/core/options.h"

namespace cvx {

bool parse_and_configure(AppContext& ctx, Options& options, GeneralConfig& general) {
  if (options.parse(ctx.argc, ctx.argv) == Options::Outcome::help_shown) {
    if (ctx.mpi->rank == 0) std::cout << options.help_text() << std::flush;
    return false;
  }
  log::LogSettings settings;
  settings.rank = ctx.mpi->rank;
  settings.world_size = ctx.mpi->size;
  settings.all_ranks = general.log_all_ranks;
  settings.level = log::parse_level(general.log_level);
  log::init(settings);
  const int threads = configure_torch_threads(static_cast<int>(general.num_threads), *ctx.mpi);
  CVX_INFO << ctx.name << " " << CVX_VERSION << ": " << ctx.mpi->size << " rank(s) on " << ctx.mpi->num_nodes
           << " node(s), " << threads << " torch thread(s) per rank, libtorch " << TORCH_VERSION;
  return true;
}

void open_run_folder(const AppContext& ctx, const Options& options, const std::filesystem::path& dir) {
  if (ctx.mpi->rank == 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    CVX_CHECK_AS(SystemError, !ec, "cannot create run folder ", dir.string(), ": ", ec.message());
    options.save(dir / "config.ini");
  }
  // Other ranks may only open their log files once the folder exists.
  CVX_MPI(MPI_Barrier(ctx.mpi->world));
  log::add_run_folder(dir);
  CVX_INFO << "run folder " << dir.string() << "; resolved configuration:\n" << options.to_ini();
}

}  // namespace cvx
