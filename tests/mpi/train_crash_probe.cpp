// Probe for the checkpoint's crash safety: cvx_train whose rank 0 (the one that records the
// manifest and renames the folder into place) dies with std::abort() once every file of the
// checkpoint of step N is staged, before the rename. mpirun then ends the job; the previous
// checkpoint must stay `latest`.
// usage: mpirun -np R train_crash_probe N [cvx_train options]
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/options.h"
#include "cvx/data/data_config.h"
#include "cvx/dist/parallel_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/model_config.h"
#include "cvx/train/train_config.h"
#include "cvx/train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: train_crash_probe N [cvx_train options]\n");
    return 2;
  }
  const int64_t crash_at = std::atoll(argv[1]);
  std::vector<char*> args{argv[0]};
  args.insert(args.end(), argv + 2, argv + argc);
  args.push_back(nullptr);
  return cvx::run_app(
      "train_crash_probe", static_cast<int>(args.size()) - 1, args.data(), [crash_at](cvx::AppContext& ctx) {
        // The options of cvx_train (src/apps/cvx_train.cpp).
        cvx::GeneralConfig general;
        cvx::TrainRunConfig run;
        cvx::Options options("train_crash_probe", "cvx_train whose rank 0 dies while committing checkpoint N");
        options.add("", general)
            .add("model", run.model)
            .add("data", run.data)
            .add("train", run.train)
            .add("lora", run.lora)
            .add("parallel", run.parallel)
            .add("validation", run.validation);
        cvx::add_foreign_sections(options, "cvx_train");
        if (!cvx::parse_and_configure(ctx, options, general)) return 0;
        run.config_file = options.config_file();
        cvx::open_run_folder(ctx, options, run.train.output_dir);
        cvx::TrainHooks hooks;
        hooks.before_checkpoint_commit = [&ctx, crash_at](int64_t step, const std::filesystem::path& staging) {
          if (ctx.mpi->rank == 0 && step == crash_at) {
            std::fprintf(stderr, "train_crash_probe: aborting rank 0 with checkpoint %lld staged in %s\n",
                         static_cast<long long>(step), staging.c_str());
            std::abort();
          }
        };
        return cvx::run_training(ctx, run, hooks);
      });
}
