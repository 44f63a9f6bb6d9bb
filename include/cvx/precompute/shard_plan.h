// Deterministic assignment of samples to ranks, balanced by a per-sample cost (e.g. bytes or frames).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cvx {

// Greedy longest-processing-time: samples in decreasing cost go to the least loaded rank (ties:
// lower rank, lower sample index), so every rank computes the same plan without communication.
// Each rank's list is sorted by sample index. Max load <= 4/3 of the optimum.
std::vector<std::vector<size_t>> balance_samples(const std::vector<uint64_t>& costs, int num_ranks);

}  // namespace cvx
