#include "cvx/precompute/shard_plan.h"

#include "cvx/core/error.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>

TEST(ShardPlan, EverySampleOnceAndBalanced) {
  std::vector<uint64_t> costs;
  for (uint64_t i = 0; i < 101; ++i) costs.push_back((i * 7919) % 97 + 1);
  for (int ranks : {1, 2, 3, 4, 16}) {
    const auto plan = cvx::balance_samples(costs, ranks);
    ASSERT_EQ(plan.size(), static_cast<size_t>(ranks));
    std::set<size_t> seen;
    uint64_t max_load = 0, total = std::accumulate(costs.begin(), costs.end(), uint64_t{0});
    for (const auto& samples : plan) {
      EXPECT_TRUE(std::is_sorted(samples.begin(), samples.end()));
      uint64_t load = 0;
      for (size_t s : samples) {
        EXPECT_TRUE(seen.insert(s).second) << "sample " << s << " assigned twice";
        load += costs[s];
      }
      max_load = std::max(max_load, load);
    }
    EXPECT_EQ(seen.size(), costs.size());
    // LPT bound: at most 4/3 of the optimum, which is at least total / ranks and the largest item.
    const double lower = std::max<double>(static_cast<double>(total) / ranks, 97.0);
    EXPECT_LE(max_load, 4.0 / 3.0 * lower + 1) << ranks << " ranks";
  }
}

TEST(ShardPlan, MoreRanksThanSamples) {
  const auto plan = cvx::balance_samples({5, 3}, 4);
  size_t assigned = 0;
  for (const auto& p : plan) assigned += p.size();
  EXPECT_EQ(assigned, 2u);
  EXPECT_THROW(cvx::balance_samples({1}, 0), cvx::Error);
}
