// The entry point of cvx_precompute.
#pragma once
#include <cstdint>
#include <functional>

#include "cvx/app/app.h"
#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_config.h"

namespace cvx {

// Where a caller can watch the job (tests kill a rank mid-run here to check the resume).
struct PrecomputeHooks {
  // On every rank, after each sample this rank encoded and marked done, with how many it has so far.
  std::function<void(int64_t samples_done_on_this_rank)> after_sample;
};

// Loads and checks the dataset lists on every rank, plans the shards, and (unless dry_run) encodes.
int run_precompute(const AppContext& ctx, const ModelConfig& model, const DataConfig& data,
                   const PrecomputeConfig& config, const PrecomputeHooks& hooks = {});

}  // namespace cvx
