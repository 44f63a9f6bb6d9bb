// Which samples each data-parallel rank trains on, step by step: a seeded permutation per epoch,
// cut into disjoint per-rank batches, resumable from a two-number state that survives a change of
// world size.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <vector>

namespace cvx {

// Where a sampler stands: `position` global positions of epoch `epoch` are consumed (a multiple of
// batch_size x data_parallel_size). Global, so a run can resume with another world size.
struct SamplerState {
  int64_t epoch = 0;
  int64_t position = 0;
};
bool operator==(const SamplerState& a, const SamplerState& b);

// {"epoch": e, "position": p}. from_json throws FormatError naming a missing or non-integer field.
void to_json(nlohmann::json& json, const SamplerState& state);
void from_json(const nlohmann::json& json, SamplerState& state);

// The order of epoch `epoch`: a permutation of [0, num_samples) drawn from (seed, epoch), the
// identity when shuffle is false. Bit-reproducible everywhere: Fisher-Yates over std::mt19937_64
// (whose output the standard fixes) seeded by splitmix64 of (seed, epoch), with Lemire's unbiased
// bounded draw, never std::shuffle / uniform_int_distribution (implementation-defined).
std::vector<int64_t> sample_order(int64_t num_samples, uint64_t seed, int64_t epoch, bool shuffle = true);

// Global batch G = batch_size x data_parallel_size x gradient_accumulation_steps per optimizer step.
// An epoch has ceil(num_samples / G) optimizer steps; micro-step m covers the global positions
// [m·B·W, (m+1)·B·W) of the epoch's order and rank r takes [m·B·W + r·B, m·B·W + (r+1)·B).
// Positions past num_samples wrap to the start of the same order (as torch's DistributedSampler
// pads), so every batch is full; num_padded_per_epoch() counts them.
class DistributedSampler {
 public:
  // Throws ConfigError naming the bad argument.
  DistributedSampler(int64_t num_samples, int64_t batch_size, int64_t gradient_accumulation_steps,
                     int64_t data_parallel_rank, int64_t data_parallel_size, uint64_t seed, bool shuffle = true);

  // This rank's batch_size sample indices for the next micro-step; after the last micro-step of an
  // epoch the next call starts the next epoch.
  std::vector<int64_t> next_batch();

  SamplerState state() const { return {epoch_, position_}; }
  // Continues from `state`, which may come from a sampler with another world size or batch size:
  // the position is global. Throws ConfigError for negative values, a position beyond the epoch or
  // one that is not a multiple of this sampler's batch_size x data_parallel_size. A position at the
  // very end of the epoch (possible only from another configuration) means the next epoch.
  void load_state(const SamplerState& state);

  int64_t epoch() const { return epoch_; }
  int64_t num_samples() const { return num_samples_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t micro_steps_per_epoch() const { return steps_per_epoch_ * gradient_accumulation_steps_; }
  int64_t global_batch_size() const { return global_batch_size_; }
  // Positions per epoch beyond num_samples, filled by wrapping around.
  int64_t num_padded_per_epoch() const { return positions_per_epoch() - num_samples_; }

 private:
  int64_t micro_batch_positions() const { return batch_size_ * data_parallel_size_; }
  int64_t positions_per_epoch() const { return steps_per_epoch_ * global_batch_size_; }
  void set_epoch(int64_t epoch);

  int64_t num_samples_;
  int64_t batch_size_;
  int64_t gradient_accumulation_steps_;
  int64_t data_parallel_rank_;
  int64_t data_parallel_size_;
  uint64_t seed_;
  bool shuffle_;
  int64_t global_batch_size_ = 0;
  int64_t steps_per_epoch_ = 0;

  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;  // sample_order of epoch_
};

}  // namespace cvx
