#include "cvx/train/trainer.h"

#include <filesystem>
#include <sstream>

#include "cvx/core/log.h"

namespace cvx {

int run_training(const AppContext& ctx, const TrainRunConfig& config) {
  const auto& t = config.train;
  const Resolution resolution = config.data.resolution();
  const int64_t global_batch = t.batch_size * t.gradient_accumulation_steps * ctx.mpi->size;
  std::ostringstream lora;
  if (t.training_type == "lora") lora << "; LoRA rank " << config.lora.rank << ", scale " << config.lora.scale();
  CVX_INFO << "plan: " << t.training_type << " fine-tuning of " << config.model.path << " (variant "
           << config.model.variant << ", base weights " << config.model.dtype << ") on clips " << resolution.to_string()
           << "; global batch " << global_batch << " = " << t.batch_size << " per rank x " << t.gradient_accumulation_steps
           << " accumulation x " << ctx.mpi->size << " rank(s); sharding " << config.parallel.sharding
           << lora.str();
  if (!std::filesystem::exists(config.model.path)) CVX_WARN << "model folder " << config.model.path << " does not exist";
  if (config.data.store.empty()) {
    CVX_WARN << "[data] store is not set: training reads the latent store written by cvx_precompute";
  } else if (!std::filesystem::exists(config.data.store)) {
    CVX_WARN << "latent store " << config.data.store << " does not exist yet (run cvx_precompute first)";
  }
  if (t.dry_run) {
    CVX_INFO << "dry run: configuration checked, nothing trained";
    return 0;
  }
  CVX_THROW_AS(Error, "the training loop is not part of this build yet; run with --dry_run to check a configuration");
}

}  // namespace cvx
