#include "cvx/data/distributed_sampler.h"

#include <nlohmann/json.hpp>

#include <numeric>
#include <random>
#include <utility>

#include "cvx/core/error.h"

namespace cvx {
namespace {

// splitmix64's output function: spreads (seed, epoch) pairs that differ in a few bits over the
// whole mt19937_64 seed space.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, range) without modulo bias (Lemire, "Fast random integer generation in an
// interval", 2019): the high half of x * range, redrawing the few x whose low half falls short.
uint64_t bounded(std::mt19937_64& rng, uint64_t range) {
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * range;
  auto low = static_cast<uint64_t>(m);
  if (low < range) {
    const uint64_t threshold = -range % range;  // 2^64 mod range
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * range;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

int64_t integer_field(const nlohmann::json& json, const char* field) {
  CVX_CHECK_AS(FormatError, json.is_object(), "sampler state is ", one_line(json.dump(), 80), ", not an object");
  const auto it = json.find(field);
  CVX_CHECK_AS(FormatError, it != json.end(), "sampler state ", one_line(json.dump(), 80), " has no \"", field, "\"");
  CVX_CHECK_AS(FormatError, it->is_number_integer() && !(it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX),
               "sampler state field \"", field, "\" is ", one_line(it->dump(), 40), ", not a 64-bit integer");
  return it->get<int64_t>();
}

}  // namespace

bool operator==(const SamplerState& a, const SamplerState& b) { return a.epoch == b.epoch && a.position == b.position; }

void to_json(nlohmann::json& json, const SamplerState& state) {
  json = {{"epoch", state.epoch}, {"position", state.position}};
}

void from_json(const nlohmann::json& json, SamplerState& state) {
  state.epoch = integer_field(json, "epoch");
  state.position = integer_field(json, "position");
}

std::vector<int64_t> sample_order(int64_t num_samples, uint64_t seed, int64_t epoch, bool shuffle) {
  CVX_CHECK_AS(ConfigError, num_samples >= 0, "cannot order ", num_samples, " samples");
  std::vector<int64_t> order(static_cast<size_t>(num_samples));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch))));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[bounded(rng, i)]);
  return order;
}

DistributedSampler::DistributedSampler(int64_t num_samples, int64_t batch_size, int64_t gradient_accumulation_steps,
                                       int64_t data_parallel_rank, int64_t data_parallel_size, uint64_t seed,
                                       bool shuffle)
    : num_samples_(num_samples),
      batch_size_(batch_size),
      gradient_accumulation_steps_(gradient_accumulation_steps),
      data_parallel_rank_(data_parallel_rank),
      data_parallel_size_(data_parallel_size),
      seed_(seed),
      shuffle_(shuffle) {
  CVX_CHECK_AS(ConfigError, num_samples > 0, "the sampler needs at least one sample, got num_samples = ", num_samples);
  CVX_CHECK_AS(ConfigError, batch_size > 0, "batch_size must be at least 1, got ", batch_size);
  CVX_CHECK_AS(ConfigError, gradient_accumulation_steps > 0, "gradient_accumulation_steps must be at least 1, got ",
               gradient_accumulation_steps);
  CVX_CHECK_AS(ConfigError, data_parallel_size > 0, "data_parallel_size must be at least 1, got ", data_parallel_size);
  CVX_CHECK_AS(ConfigError, data_parallel_rank >= 0 && data_parallel_rank < data_parallel_size, "data_parallel_rank ",
               data_parallel_rank, " is outside [0, ", data_parallel_size, ")");
  int64_t micro = 0;
  const bool overflow = __builtin_mul_overflow(batch_size, data_parallel_size, &micro) ||
                        __builtin_mul_overflow(micro, gradient_accumulation_steps, &global_batch_size_) ||
                        global_batch_size_ > INT64_MAX - num_samples;
  CVX_CHECK_AS(ConfigError, !overflow, "global batch batch_size ", batch_size, " x data_parallel_size ",
               data_parallel_size, " x gradient_accumulation_steps ", gradient_accumulation_steps, " is too large");
  steps_per_epoch_ = (num_samples + global_batch_size_ - 1) / global_batch_size_;
  set_epoch(0);
}

void DistributedSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  order_ = sample_order(num_samples_, seed_, epoch, shuffle_);
}

std::vector<int64_t> DistributedSampler::next_batch() {
  std::vector<int64_t> batch(static_cast<size_t>(batch_size_));
  const int64_t first = position_ + data_parallel_rank_ * batch_size_;
  // The modulo may wrap more than once when the global batch exceeds the dataset.
  for (int64_t k = 0; k < batch_size_; ++k) batch[k] = order_[(first + k) % num_samples_];
  position_ += micro_batch_positions();
  if (position_ == positions_per_epoch()) {
    position_ = 0;
    set_epoch(epoch_ + 1);
  }
  return batch;
}

void DistributedSampler::load_state(const SamplerState& state) {
  const std::string what = "cannot resume the sampler at epoch " + std::to_string(state.epoch) + ", position " +
                           std::to_string(state.position) + ": ";
  CVX_CHECK_AS(ConfigError, state.epoch >= 0 && state.position >= 0, what, "negative values");
  CVX_CHECK_AS(ConfigError, state.position <= positions_per_epoch(), what, "an epoch here has ", positions_per_epoch(),
               " positions (", steps_per_epoch_, " steps of global batch ", global_batch_size_, " over ", num_samples_,
               " samples)");
  CVX_CHECK_AS(ConfigError, state.position % micro_batch_positions() == 0, what,
               "the position is not a multiple of batch_size ", batch_size_, " x data_parallel_size ",
               data_parallel_size_, " = ", micro_batch_positions(),
               " (it was saved with another batch or world size; resume at a step boundary both share)");
  if (state.position == positions_per_epoch()) {
    CVX_CHECK_AS(ConfigError, state.epoch < INT64_MAX, what, "the epoch count is exhausted");
    position_ = 0;
    set_epoch(state.epoch + 1);
    return;
  }
  position_ = state.position;
  if (state.epoch != epoch_) set_epoch(state.epoch);
}

}  // namespace cvx
