// Probe for the precompute's resume: cvx_precompute whose last rank dies as if killed (no unwinding,
// no MPI_Finalize, exit code 9) once it has encoded and marked done N samples. mpirun then ends
// the job, leaving a store with some samples done.
// usage: mpirun -np R precompute_kill_probe N [cvx_precompute options]
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/options.h"
#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_job.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: precompute_kill_probe N [cvx_precompute options]\n");
    return 2;
  }
  const int64_t die_after = std::atoll(argv[1]);
  std::vector<char*> args{argv[0]};
  args.insert(args.end(), argv + 2, argv + argc);
  args.push_back(nullptr);
  return cvx::run_app(
      "precompute_kill_probe", static_cast<int>(args.size()) - 1, args.data(), [die_after](cvx::AppContext& ctx) {
        // The options of cvx_precompute (src/apps/cvx_precompute.cpp).
        cvx::GeneralConfig general;
        cvx::ModelConfig model;
        cvx::DataConfig data;
        cvx::PrecomputeConfig precompute;
        cvx::Options options("precompute_kill_probe", "cvx_precompute whose last rank dies after N samples");
        options.add("", general).add("model", model).add("data", data).add("precompute", precompute);
        cvx::add_foreign_sections(options, "cvx_precompute");
        if (!cvx::parse_and_configure(ctx, options, general)) return 0;
        cvx::PrecomputeHooks hooks;
        hooks.after_sample = [&ctx, die_after](int64_t done) {
          if (ctx.mpi->rank == ctx.mpi->size - 1 && done >= die_after) std::_Exit(9);
        };
        return cvx::run_precompute(ctx, model, data, precompute, hooks);
      });
}
