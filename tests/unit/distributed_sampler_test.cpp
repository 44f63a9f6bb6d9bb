// DistributedSampler: coverage and disjointness over ranks, seeded order, exact resume (also with
// another world size), state validation, and a pinned order that must never change.
#include "cvx/data/distributed_sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "cvx/core/error.h"

namespace cvx {
namespace {

using Batches = std::vector<std::vector<int64_t>>;

struct Shape {
  int64_t num_samples, batch_size, accumulation, world;
};

// One sampler per rank, all with the same seed.
std::vector<DistributedSampler> ranks_of(const Shape& s, uint64_t seed = 7, bool shuffle = true) {
  std::vector<DistributedSampler> out;
  for (int64_t r = 0; r < s.world; ++r) {
    out.emplace_back(s.num_samples, s.batch_size, s.accumulation, r, s.world, seed, shuffle);
  }
  return out;
}

// The next `n` batches of one sampler.
Batches take(DistributedSampler& sampler, int64_t n) {
  Batches out;
  for (int64_t i = 0; i < n; ++i) out.push_back(sampler.next_batch());
  return out;
}

// Substring check with the message in the failure output.
void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    for (const std::string& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(DistributedSampler, OneEpochOverAllRanksCoversEverySampleOncePlusTheCountedPadding) {
  for (const Shape& s : {Shape{10, 1, 1, 4}, Shape{10, 2, 3, 2}, Shape{12, 3, 1, 4}, Shape{3, 2, 2, 2},
                         Shape{1, 1, 1, 1}, Shape{101, 4, 2, 3}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.num_samples << " B=" << s.batch_size << " A=" << s.accumulation
                                      << " W=" << s.world);
    auto ranks = ranks_of(s);
    const int64_t global = s.batch_size * s.world * s.accumulation;
    const int64_t steps = (s.num_samples + global - 1) / global;
    EXPECT_EQ(ranks[0].global_batch_size(), global);
    EXPECT_EQ(ranks[0].steps_per_epoch(), steps);
    EXPECT_EQ(ranks[0].micro_steps_per_epoch(), steps * s.accumulation);
    EXPECT_EQ(ranks[0].num_padded_per_epoch(), steps * global - s.num_samples);

    std::map<int64_t, int64_t> count;
    for (int64_t m = 0; m < ranks[0].micro_steps_per_epoch(); ++m) {
      std::set<int64_t> in_step;
      for (auto& rank : ranks) {
        const std::vector<int64_t> batch = rank.next_batch();
        ASSERT_EQ(static_cast<int64_t>(batch.size()), s.batch_size);
        for (const int64_t i : batch) {
          ASSERT_GE(i, 0);
          ASSERT_LT(i, s.num_samples);
          ++count[i];
          // Distinct within a micro-step while the step's positions do not wrap past a whole epoch.
          if (s.batch_size * s.world <= s.num_samples) EXPECT_TRUE(in_step.insert(i).second) << "sample " << i;
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(count.size()), s.num_samples);
    int64_t extra = 0;
    for (const auto& [sample, n] : count) extra += n - 1;
    EXPECT_EQ(extra, ranks[0].num_padded_per_epoch());
    for (const auto& rank : ranks) EXPECT_EQ(rank.state(), (SamplerState{1, 0}));
  }
}

TEST(DistributedSampler, RanksTakeDisjointSlicesOfTheEpochOrderAndPaddingWrapsToItsStart) {
  const Shape s{10, 2, 1, 2};  // 4 positions per micro-step, 3 micro-steps, 2 padded
  auto ranks = ranks_of(s);
  const std::vector<int64_t> order = sample_order(10, 7, 0);
  for (int64_t m = 0; m < 3; ++m) {
    for (int64_t r = 0; r < 2; ++r) {
      const int64_t first = m * 4 + r * 2;
      EXPECT_EQ(ranks[r].next_batch(), (std::vector<int64_t>{order[first % 10], order[(first + 1) % 10]}))
          << "micro-step " << m << " rank " << r;
    }
  }
}

TEST(DistributedSampler, SameSeedSameOrderAnotherSeedOrEpochAnother) {
  const std::vector<int64_t> a = sample_order(1000, 1234, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(a, identity);
  EXPECT_EQ(sample_order(1000, 1234, 0), a);
  EXPECT_NE(sample_order(1000, 1235, 0), a);
  EXPECT_NE(sample_order(1000, 1234, 1), a);

  DistributedSampler x(1000, 10, 1, 0, 1, 1234), y(1000, 10, 1, 0, 1, 1234), z(1000, 10, 1, 0, 1, 99);
  const Batches first = take(x, 200);  // two epochs
  EXPECT_EQ(take(y, 200), first);
  EXPECT_NE(take(z, 200), first);
  const Batches epoch0(first.begin(), first.begin() + 100), epoch1(first.begin() + 100, first.end());
  EXPECT_NE(epoch0, epoch1);
  EXPECT_EQ(epoch0.front(), std::vector<int64_t>(a.begin(), a.begin() + 10));
}

TEST(DistributedSampler, WithoutShuffleTheOrderIsTheIdentityEveryEpoch) {
  std::vector<int64_t> identity(7);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sample_order(7, 42, 3, /*shuffle=*/false), identity);
  DistributedSampler sampler(7, 3, 1, 0, 1, 42, /*shuffle=*/false);
  const Batches expected = {{0, 1, 2}, {3, 4, 5}, {6, 0, 1}, {0, 1, 2}};
  EXPECT_EQ(take(sampler, 4), expected);
}

TEST(DistributedSampler, ResumingFromASavedStateContinuesTheUninterruptedSequence) {
  const Shape s{23, 2, 2, 3};                // 12 per step, 2 steps, 4 micro-steps per epoch
  for (int64_t stop : {0, 1, 3, 4, 5, 9}) {  // mid-epoch, at and across the epoch boundary
    SCOPED_TRACE(::testing::Message() << "stopped after " << stop << " micro-steps");
    for (int64_t r = 0; r < s.world; ++r) {
      DistributedSampler straight(s.num_samples, s.batch_size, s.accumulation, r, s.world, 5);
      const Batches all = take(straight, 14);
      DistributedSampler first(s.num_samples, s.batch_size, s.accumulation, r, s.world, 5);
      take(first, stop);
      // Through JSON, as a checkpoint stores it.
      const nlohmann::json saved = first.state();
      EXPECT_EQ(saved.at("epoch").get<int64_t>(), stop / 4);
      EXPECT_EQ(saved.at("position").get<int64_t>(), stop % 4 * 6);
      DistributedSampler resumed(s.num_samples, s.batch_size, s.accumulation, r, s.world, 5);
      resumed.load_state(saved.get<SamplerState>());
      EXPECT_EQ(resumed.epoch(), stop / 4);
      EXPECT_EQ(take(resumed, 14 - stop), Batches(all.begin() + stop, all.end()));
    }
  }
}

// All ranks' batches of `n` micro-steps laid end to end: the global order the ranks consumed.
std::vector<int64_t> global_sequence(std::vector<DistributedSampler>& ranks, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t m = 0; m < n; ++m) {
    for (auto& rank : ranks) {
      for (const int64_t i : rank.next_batch()) out.push_back(i);
    }
  }
  return out;
}

TEST(DistributedSampler, AStateFromAnotherWorldSizeContinuesTheSameGlobalOrder) {
  // W=4,B=1 and W=2,B=2 share 4 positions per micro-step and 12 per epoch of 10 samples.
  auto four = ranks_of({10, 1, 1, 4});
  const std::vector<int64_t> reference = global_sequence(four, 6);  // two epochs

  auto before = ranks_of({10, 1, 1, 4});
  const std::vector<int64_t> head = global_sequence(before, 2);
  const SamplerState saved = before[0].state();
  EXPECT_EQ(saved, (SamplerState{0, 8}));
  auto after = ranks_of({10, 2, 1, 2});
  for (auto& rank : after) rank.load_state(saved);
  std::vector<int64_t> resumed = head;
  for (const int64_t i : global_sequence(after, 4)) resumed.push_back(i);
  EXPECT_EQ(resumed, reference);

  // Position 8 is no multiple of 3 x 2 = 6: the error names both.
  DistributedSampler six(10, 3, 1, 0, 2, 7);
  expect_error_mentions([&] { six.load_state(saved); }, {"position 8", "batch_size 3", "data_parallel_size 2", "6"});
}

TEST(DistributedSampler, AStateAtTheEndOfAnEpochFromAnotherConfigurationStartsTheNext) {
  // Position 12 is mid-epoch at B=4, A=2 (16 positions per epoch of 10 samples) but a whole epoch
  // at B=4, A=1 (12 positions).
  DistributedSampler sampler(10, 4, 1, 0, 1, 7);
  sampler.load_state({2, 12});
  EXPECT_EQ(sampler.state(), (SamplerState{3, 0}));
  const std::vector<int64_t> order = sample_order(10, 7, 3);
  EXPECT_EQ(sampler.next_batch(), std::vector<int64_t>(order.begin(), order.begin() + 4));
}

TEST(DistributedSampler, BadStatesAreRefusedWithTheReason) {
  DistributedSampler sampler(10, 2, 1, 0, 2, 7);  // 4 per micro-step, 12 positions per epoch
  expect_error_mentions([&] { sampler.load_state({-1, 0}); }, {"epoch -1", "negative"});
  expect_error_mentions([&] { sampler.load_state({0, -4}); }, {"position -4", "negative"});
  expect_error_mentions([&] { sampler.load_state({0, 16}); }, {"position 16", "12 positions"});
  expect_error_mentions([&] { sampler.load_state({0, 6}); }, {"position 6", "multiple", "4"});
  EXPECT_EQ(sampler.state(), (SamplerState{0, 0}));  // unchanged by the refused loads

  EXPECT_THROW(nlohmann::json({{"epoch", 1}}).get<SamplerState>(), FormatError);
  EXPECT_THROW(nlohmann::json({{"epoch", 1}, {"position", 2.5}}).get<SamplerState>(), FormatError);
  EXPECT_THROW(nlohmann::json({{"epoch", "1"}, {"position", 0}}).get<SamplerState>(), FormatError);
  EXPECT_THROW(nlohmann::json::array({1, 2}).get<SamplerState>(), FormatError);
  EXPECT_EQ(nlohmann::json::parse(R"({"epoch": 3, "position": 8})").get<SamplerState>(), (SamplerState{3, 8}));
}

TEST(DistributedSampler, BadConstructorArgumentsNameTheArgument) {
  expect_error_mentions([] { DistributedSampler(0, 1, 1, 0, 1, 0); }, {"num_samples = 0"});
  expect_error_mentions([] { DistributedSampler(-5, 1, 1, 0, 1, 0); }, {"num_samples = -5"});
  expect_error_mentions([] { DistributedSampler(10, 0, 1, 0, 1, 0); }, {"batch_size", "0"});
  expect_error_mentions([] { DistributedSampler(10, 1, 0, 0, 1, 0); }, {"gradient_accumulation_steps", "0"});
  expect_error_mentions([] { DistributedSampler(10, 1, 1, 0, 0, 0); }, {"data_parallel_size", "0"});
  expect_error_mentions([] { DistributedSampler(10, 1, 1, 2, 2, 0); }, {"data_parallel_rank 2", "[0, 2)"});
  expect_error_mentions([] { DistributedSampler(10, 1, 1, -1, 2, 0); }, {"data_parallel_rank -1"});
  expect_error_mentions([] { DistributedSampler(10, int64_t{1} << 40, int64_t{1} << 30, 0, 1, 0); }, {"too large"});
}

TEST(DistributedSampler, TheOrderOfAFixedCaseIsPinned) {
  // Pins the algorithm: std::mt19937_64 seeded by splitmix64(seed ^ splitmix64(epoch)), Lemire's
  // bounded draw, Fisher-Yates from the back. All of it is fixed by the C++ standard or by this
  // code, so the list holds on every platform, compiler and libtorch version (computed once with
  // this implementation; clang and gcc agree). Changing the algorithm would silently reshuffle
  // every resumed run: only ever update these lists deliberately.
  EXPECT_EQ(sample_order(10, 42, 0), (std::vector<int64_t>{5, 9, 7, 1, 3, 4, 2, 0, 6, 8}));
  EXPECT_EQ(sample_order(10, 42, 1), (std::vector<int64_t>{5, 6, 3, 4, 7, 2, 9, 1, 8, 0}));
}

}  // namespace
}  // namespace cvx
