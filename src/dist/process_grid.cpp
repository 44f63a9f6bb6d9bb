#include "cvx/dist/process_grid.h"

#include "cvx/core/error.h"

namespace cvx {

ProcessGrid ProcessGrid::resolve(const ParallelConfig& config, int world_size) {
  ProcessGrid g;
  g.sequence = static_cast<int>(config.sequence_parallel_size);
  CVX_CHECK_AS(ConfigError, world_size % g.sequence == 0, "[parallel] sequence_parallel_size = ", g.sequence,
               " does not divide the ", world_size, " rank(s): run on a multiple of it");
  const int data_parallel = world_size / g.sequence;
  const int replicate = static_cast<int>(config.replicate_size), shard = static_cast<int>(config.shard_size);
  if (shard == 0) {
    g.replicate = replicate == 0 ? 1 : replicate;
    CVX_CHECK_AS(ConfigError, data_parallel % g.replicate == 0, "[parallel] replicate_size = ", g.replicate,
                 " does not divide the ", data_parallel, " data-parallel rank(s) (", world_size,
                 " ranks / sequence_parallel_size ", g.sequence, "): choose a divisor of ", data_parallel);
    g.shard = data_parallel / g.replicate;
  } else {
    g.shard = shard;
    CVX_CHECK_AS(ConfigError, data_parallel % g.shard == 0, "[parallel] shard_size = ", g.shard,
                 " does not divide the ", data_parallel, " data-parallel rank(s) (", world_size,
                 " ranks / sequence_parallel_size ", g.sequence, "): choose a divisor of ", data_parallel);
    g.replicate = data_parallel / g.shard;
    CVX_CHECK_AS(ConfigError, replicate == 0 || replicate == g.replicate, "[parallel] replicate_size = ", replicate,
                 " x shard_size = ", g.shard, " x sequence_parallel_size = ", g.sequence, " is not the ", world_size,
                 " rank(s): give one of replicate_size and shard_size (the other is derived), or sizes whose product "
                 "is the world");
  }
  return g;
}

std::string ProcessGrid::describe() const {
  if (replicate == 1 && sequence == 1) return "";
  return std::to_string(replicate) + (replicate == 1 ? " replica x " : " replicas x ") + std::to_string(shard) +
         (shard == 1 ? " shard x " : " shards x ") + std::to_string(sequence) + " sequence";
}

ProcessGroups make_process_groups(Communicator& world, const ProcessGrid& grid) {
  CVX_CHECK(world.size() == grid.world_size(), "process grid ", grid.describe(), " is ", grid.world_size(),
            " ranks, the world ", world.size());
  const int rank = world.rank();
  ProcessGroups g;
  // MPI_Comm_split is collective over the world: every rank makes the same calls in this order.
  g.shard = world.split(grid.replicate_rank(rank), rank, "shard");
  if (grid.replicate > 1) g.replicate = world.split(rank % (grid.shard * grid.sequence), rank, "replicate");
  if (grid.sequence > 1) g.sequence = world.split(grid.data_parallel_rank(rank), rank, "sequence");
  return g;
}

}  // namespace cvx
