#include "cvx/precompute/shard_plan.h"

#include <algorithm>
#include <numeric>
#include <queue>
#include <tuple>

#include "cvx/core/error.h"

namespace cvx {

std::vector<std::vector<size_t>> balance_samples(const std::vector<uint64_t>& costs, int num_ranks) {
  CVX_CHECK(num_ranks > 0, "balance_samples needs at least one rank, got ", num_ranks);
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  using Load = std::tuple<uint64_t, int>;  // (load, rank): the smallest pops first
  std::priority_queue<Load, std::vector<Load>, std::greater<Load>> loads;
  for (int r = 0; r < num_ranks; ++r) loads.emplace(0, r);
  std::vector<std::vector<size_t>> plan(num_ranks);
  for (size_t sample : order) {
    auto [load, rank] = loads.top();
    loads.pop();
    plan[rank].push_back(sample);
    loads.emplace(load + costs[sample], rank);
  }
  for (auto& samples : plan) std::sort(samples.begin(), samples.end());
  return plan;
}

}  // namespace cvx
