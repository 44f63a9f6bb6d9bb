#include <gtest/gtest.h>

#include <fstream>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/core/checked_call.h"
#include "cvx/core/log.h"
#include "cvx/core/options.h"
#include "test_util.h"

namespace fs = std::filesystem;

// Every rank opens the same run folder: rank 0 writes the resolved config, each rank with
// log_all_ranks gets its own log file, and rank 0's log has the records of rank 0 only.
TEST(RunFolder, SharedAcrossRanks) {
  const auto& world = cvx::mpi_world();
  std::string dir;
  if (world.rank == 0) dir = cvx::test::scratch_dir("run_folder").string();
  int length = static_cast<int>(dir.size());
  CVX_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD));
  dir.resize(length);
  CVX_MPI(MPI_Bcast(dir.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD));

  cvx::GeneralConfig general;
  general.log_all_ranks = true;
  cvx::Options options("run_folder_test", "");
  options.add("", general);
  cvx::AppContext ctx;
  ctx.name = "run_folder_test";
  ctx.mpi = &world;
  cvx::log::LogSettings settings;
  settings.rank = world.rank;
  settings.world_size = world.size;
  settings.all_ranks = true;
  cvx::log::init(settings);
  cvx::open_run_folder(ctx, options, dir);
  CVX_INFO << "hello from rank " << world.rank;
  cvx::log::flush();
  CVX_MPI(MPI_Barrier(MPI_COMM_WORLD));

  EXPECT_TRUE(fs::exists(fs::path(dir) / "config.ini"));
  const fs::path mine = world.rank == 0 ? fs::path(dir) / "log.txt"
                                        : fs::path(dir) / "logs" / ("rank" + std::to_string(world.rank) + ".txt");
  std::ifstream in(mine);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("[r" + std::to_string(world.rank) + "] hello from rank " + std::to_string(world.rank)),
            std::string::npos)
      << mine << ":\n"
      << text;
  for (int r = 0; r < world.size; ++r) {
    if (r != world.rank) EXPECT_EQ(text.find("hello from rank " + std::to_string(r)), std::string::npos);
  }
  settings.all_ranks = false;
  cvx::log::init(settings);
}
