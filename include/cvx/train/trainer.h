// The training entry point of cvx_train.
#pragma once
#include <functional>
#include <vector>

#include "cvx/app/app.h"
#include "cvx/data/data_config.h"
#include "cvx/dist/parallel_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_config.h"
#include "cvx/train/step_log.h"
#include "cvx/train/train_config.h"

namespace cvx {

// Every section cvx_train reads.
struct TrainRunConfig {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  LoraConfig lora;
  ParallelConfig parallel;
  ValidationConfig validation;
  // What [train] precompute_if_missing runs the precompute with: the defaults (cvx_train does not
  // read [precompute], whose dry_run would clash with [train] dry_run on the command line).
  PrecomputeConfig precompute;
  std::string config_file;  // the --config file, for messages that give the command to run
};

// Where later features plug in without touching the loop (validation videos, TensorBoard,
// preemption): called on every rank after each optimizer step, and after each checkpoint save.
struct TrainHooks {
  std::vector<std::function<void(const StepReport&)>> on_step;
  std::vector<std::function<void(int64_t step, const std::filesystem::path& checkpoint)>> on_checkpoint;
  // Asked after every step (on every rank; the answers are OR-ed over ranks): true stops the run
  // after a checkpoint of that step; run_training then returns kExitStoppedToResume without the
  // final export (the checkpoint holds this step's LoRA export).
  std::function<bool(int64_t step)> should_stop;
  // Test seam: called on every rank once every file of a checkpoint is in its staging folder,
  // before rank 0 records the manifest and renames the folder into place (a probe crashes here).
  std::function<void(int64_t step, const std::filesystem::path& staging)> before_checkpoint_commit;
};

// The exit status of a run stopped early by should_stop (SIGUSR1/SIGTERM in cvx_train) after its
// checkpoint was saved: EX_TEMPFAIL of sysexits.h, "temporary failure, try again": the Slurm
// scripts requeue the job on it and the requeued job resumes from `latest`.
inline constexpr int kExitStoppedToResume = 75;

// Runs (or, with train.dry_run, plans) a training job; returns the exit code (0, or
// kExitStoppedToResume).
int run_training(const AppContext& ctx, const TrainRunConfig& config, const TrainHooks& hooks = {});

}  // namespace cvx
