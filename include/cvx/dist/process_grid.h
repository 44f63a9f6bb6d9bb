// The process groups of a run: world = replicate x shard x sequence ([parallel] replicate_size,
// shard_size, sequence_parallel_size).
//
// Rules:
// - Rank r has coordinates sequence = r mod P, shard = (r / P) mod S, replicate = r / (P S):
//   the ranks of a sequence group are consecutive (one node under the usual by-slot placement, as
//   the all-to-all around attention is the heaviest traffic), then a replica's ranks.
// - The sharding engine's group is one replica: its S x P ranks hold one copy of the parameters,
//   gradients and optimizer state, sharded P S ways (the ranks of a sequence group hold different
//   shards; their partial gradients are summed by the same reduce-scatter). The replicate group
//   (the R ranks at the same place in every replica) averages the gradient shards (HSDP).
// - The data-parallel world, which draws the samples, is R x S; rank r is data-parallel rank r / P.
// - Sizes left 0 are derived: shard_size = world / (R P); replicate_size = world / (S P) when
//   shard_size is given, else 1. A grid whose product is not the world is refused with the sizes.
#pragma once
#include <memory>
#include <string>

#include "cvx/dist/communicator.h"
#include "cvx/dist/parallel_config.h"

namespace cvx {

struct ProcessGrid {
  int replicate = 1, shard = 1, sequence = 1;

  // From the options for `world_size` ranks; throws ConfigError naming the options.
  static ProcessGrid resolve(const ParallelConfig& config, int world_size);

  int world_size() const { return replicate * shard * sequence; }
  int data_parallel_size() const { return replicate * shard; }
  int data_parallel_rank(int rank) const { return rank / sequence; }
  int sequence_rank(int rank) const { return rank % sequence; }
  int shard_rank(int rank) const { return (rank / sequence) % shard; }
  int replicate_rank(int rank) const { return rank / (sequence * shard); }
  // "2 replicas x 4 shards x 2 sequence", or "" for a plain sharded world.
  std::string describe() const;
};

struct ProcessGroups {
  std::unique_ptr<Communicator> shard;      // one replica: the engine's group (S x P ranks)
  std::unique_ptr<Communicator> replicate;  // null when R = 1
  std::unique_ptr<Communicator> sequence;   // null when P = 1
};

// Splits `world` (collective over it) into the grid's groups; `world` must outlive them.
ProcessGroups make_process_groups(Communicator& world, const ProcessGrid& grid);

}  // namespace cvx
