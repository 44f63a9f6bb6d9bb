#include "cvx/train/trainer.h"

#include <filesystem>
#include <sstream>

#include "cvx/core/log.h"
#include "cvx/dist/world_communicator.h"
#include "cvx/train/memory_plan.h"

namespace cvx {

int run_training(const AppContext& ctx, const TrainRunConfig& config) {
  const auto& t = config.train;
  const Resolution resolution = config.data.resolution();
  const int simulated = static_cast<int>(config.parallel.simulate_world_size);
  CVX_CHECK_AS(ConfigError, simulated == 0 || t.dry_run, "[parallel] simulate_world_size = ", simulated,
               " plans a world that is not there: it needs --dry_run");
  const int world_size = simulated > 0 ? simulated : ctx.mpi->size;
  const int64_t global_batch = t.batch_size * t.gradient_accumulation_steps * world_size;
  std::ostringstream lora;
  if (t.training_type == "lora") lora << "; LoRA rank " << config.lora.rank << ", scale " << config.lora.scale();
  const std::string backend = resolve_backend(config.parallel.backend, rank_device(*ctx.mpi));
  CVX_INFO << "plan: " << t.training_type << " fine-tuning of " << config.model.path << " (variant "
           << config.model.variant << ", compute dtype " << (t.mixed_precision == "no" ? "fp32" : t.mixed_precision)
           << ") on clips " << resolution.to_string()
           << "; global batch " << global_batch << " = " << t.batch_size << " per rank x " << t.gradient_accumulation_steps
           << " accumulation x " << world_size << " rank(s)" << (simulated > 0 ? " (simulated)" : "") << "; sharding "
           << config.parallel.resolved_sharding() << " over " << backend << lora.str();
  // The memory plan needs the transformer's shape: from the model folder, or the variant's preset.
  const bool plannable = std::filesystem::exists(std::filesystem::path(config.model.path) / "transformer" / "config.json") ||
                         config.model.variant != "auto";
  if (plannable) {
    std::string source;
    resolve_transformer_config(config.model, &source);
    CVX_INFO << "transformer configuration from " << source;
    if (ctx.mpi->rank == 0) CVX_INFO << plan_memory_report(config, world_size);
  } else {
    CVX_WARN << "no memory plan: " << config.model.path << " has no transformer/config.json and [model] variant is "
             << "auto (set the variant to plan without the weights)";
  }
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
