// cvx_train: fine-tune a CogVideoX transformer (LoRA or full) on a precomputed latent store.
// SIGUSR1 or SIGTERM: every rank finishes its step, a checkpoint is saved, exit status 75
// (cvx::kExitStoppedToResume) tells the batch script to requeue the job.
#include <optional>

#include "cvx/app/app.h"
#include "cvx/app/general_config.h"
#include "cvx/app/program_sections.h"
#include "cvx/core/options.h"
#include "cvx/core/stop_signal.h"
#include "cvx/data/data_config.h"
#include "cvx/dist/parallel_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/model_config.h"
#include "cvx/train/metrics_plotter.h"
#include "cvx/train/train_config.h"
#include "cvx/train/trainer.h"

int main(int argc, char** argv) {
  // Before MPI starts: a signal that comes during start-up is then a stop request too (after the
  // first step), not the default action that kills the rank.
  cvx::install_stop_signal_handlers();
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
    cvx::StopSignalWatch stop_signals;
    cvx::TrainHooks hooks;
    hooks.should_stop = [&stop_signals](int64_t step) { return stop_signals.requested(step); };
    hooks.on_checkpoint.push_back(
        [&stop_signals](int64_t, const std::filesystem::path&) { stop_signals.report_ignored(); });
    // Rank 0 redraws loss.png after each checkpoint; the plotter's end waits for the last plot.
    std::optional<cvx::MetricsPlotter> plotter;
    if (ctx.mpi->rank == 0 && run.train.plot_metrics && !run.train.dry_run) {
      plotter.emplace(run.train.output_dir);
      hooks.on_checkpoint.push_back([&plotter](int64_t, const std::filesystem::path&) { plotter->request(); });
    }
    return cvx::run_training(ctx, run, hooks);
  });
}
