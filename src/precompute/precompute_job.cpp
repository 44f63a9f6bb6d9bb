#include "cvx/precompute/precompute_job.h"

#include <filesystem>

#include "cvx/core/log.h"
#include "cvx/data/dataset_lists.h"
#include "cvx/precompute/shard_plan.h"

namespace cvx {

int run_precompute(const AppContext& ctx, const ModelConfig& model, const DataConfig& data,
                   const PrecomputeConfig& config) {
  CVX_CHECK_AS(ConfigError, !data.lists.data_root.empty(), "[data] data_root is required: the dataset folder with ",
               data.lists.caption_column, " and ", data.lists.video_column);
  CVX_CHECK_AS(ConfigError, !data.store.empty(), "[data] store is required: the HDF5 file to write the latents to");
  const Resolution resolution = data.resolution();
  // Every rank reads the (small) lists; the checks are deterministic, so all ranks agree.
  const DatasetLists lists = load_dataset_lists(data.lists);
  std::vector<uint64_t> costs;
  for (const auto& e : lists.entries) costs.push_back(std::filesystem::file_size(e.video));
  const auto plan = balance_samples(costs, ctx.mpi->size);
  CVX_INFO << "dataset " << lists.data_root.string() << ": " << lists.entries.size() << " samples"
           << (lists.images_file.empty() ? "" : " with images") << ", " << lists.warnings.size() << " warning(s); clips "
           << resolution.to_string() << ", sampling " << data.frame_sampling << ", " << data.resize_mode << "; store "
           << data.store;
  for (int r = 0; r < ctx.mpi->size; ++r) {
    uint64_t bytes = 0;
    for (size_t i : plan[r]) bytes += costs[i];
    CVX_INFO << "  rank " << r << ": " << plan[r].size() << " samples, " << bytes / 1024 << " KiB of video";
  }
  if (!std::filesystem::exists(model.path)) CVX_WARN << "model folder " << model.path << " does not exist";
  if (config.dry_run) {
    CVX_INFO << "dry run: dataset checked and shards planned, nothing encoded";
    return 0;
  }
  CVX_THROW_AS(Error, "encoding into the latent store is not part of this build yet; run with --dry_run to check the "
                      "dataset and the plan");
}

}  // namespace cvx
