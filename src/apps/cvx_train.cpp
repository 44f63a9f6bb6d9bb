// cvx_train: fine-tune a CogVideoX transformer (LoRA or full) on a precomputed latent store.
#include <optional>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/options.h"
#include "cvx/data/data_config.h"
#include "cvx/dist/parallel_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/model_config.h"
#include "cvx/train/metrics_plotter.h"
#include "cvx/train/train_config.h"
#include "cvx/train/trainer.h"

int main(int argc, char** argv) {
  return cvx::run_app("cvx_train", argc, argv, [](cvx::AppContext& ctx) {
    cvx::GeneralConfig general;
    cvx::TrainRunConfig run;
    cvx::Options options("cvx_train",
                         "fine-tune a CogVideoX transformer (LoRA or full) with sharded training over MPI ranks");
    options.add("", general)
        .add("model", run.model, "the diffusers model to fine-tune")
        .add("data", run.data, "dataset and latent store (written by cvx_precompute)")
        .add("train", run.train, "optimisation, schedule, checkpoints")
        .add("lora", run.lora, "LoRA adapters (training_type = lora)")
        .add("parallel", run.parallel, "distribution over ranks")
        .add("validation", run.validation, "validation videos during training");
    cvx::add_foreign_sections(options, ctx.name);
    if (!cvx::parse_and_configure(ctx, options, general)) return 0;
    run.config_file = options.config_file();
    cvx::open_run_folder(ctx, options, run.train.output_dir);
    cvx::TrainHooks hooks;
    // Rank 0 redraws loss.png after each checkpoint; the plotter's end waits for the last plot.
    std::optional<cvx::MetricsPlotter> plotter;
    if (ctx.mpi->rank == 0 && run.train.plot_metrics && !run.train.dry_run) {
      plotter.emplace(run.train.output_dir);
      hooks.on_checkpoint.push_back([&plotter](int64_t, const std::filesystem::path&) { plotter->request(); });
    }
    return cvx::run_training(ctx, run, hooks);
  });
}
