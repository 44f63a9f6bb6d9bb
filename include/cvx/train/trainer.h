// The training entry point of cvx_train.
#pragma once
#include "cvx/app/app.h"
#include "cvx/data/data_config.h"
#include "cvx/dist/parallel_config.h"
#include "cvx/model/lora_config.h"
#include "cvx/model/model_config.h"
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
};

// Runs (or, with train.dry_run, plans) a training job; returns the exit code.
int run_training(const AppContext& ctx, const TrainRunConfig& config);

}  // namespace cvx
