// The entry point of cvx_precompute.
#pragma once
#include "cvx/app/app.h"
#include "cvx/data/data_config.h"
#include "cvx/model/model_config.h"
#include "cvx/precompute/precompute_config.h"

namespace cvx {

// Loads and checks the dataset lists on every rank, plans the shards, and (unless dry_run) encodes.
int run_precompute(const AppContext& ctx, const ModelConfig& model, const DataConfig& data,
                   const PrecomputeConfig& config);

}  // namespace cvx
