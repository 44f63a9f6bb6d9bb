// The sharded engine in a fake world of 8 (one process playing rank 3 of 8): per-rank memory and
// traffic of 8-way sharding measured without 8 processes.
#include <gtest/gtest.h>

#include "cvx/dist/fake_communicator.h"
#include "cvx/io/model_folder.h"
#include "engine_test_util.h"

namespace {

uint64_t shard_bytes(cvx::FsdpEngine& engine, bool trainable, bool masters) {
  uint64_t n = 0;
  for (const auto& unit : engine.units())
    for (const auto& g : unit.groups()) {
      if (g.layout.trainable != trainable) continue;
      const auto& t = masters ? g.master : g.shard;
      n += t.numel() * t.element_size();
    }
  return n;
}

}  // namespace

// Each sharded figure of a rank of 8 is the total over 8: exactly for the padded layout, and
// within the alignment padding of the unpadded model.
TEST(FsdpFakeWorld, PerRankFiguresForEightRanksAreTheTotalOverEight) {
  for (const bool lora : {true, false}) {
    SCOPED_TRACE(lora ? "LoRA" : "full fine-tuning");
    cvx::test::EngineRunOptions o;
    o.lora = lora;
    o.global_batch = 8;
    cvx::FakeCommunicator one(0, 1), eight(3, 8);
    cvx::test::EngineRun single(one, o), fake(eight, o);
    const auto m1 = single.engine().memory(), m8 = fake.engine().memory();
    EXPECT_EQ(m8.world_size, 8);
    EXPECT_EQ(m8.num_frozen, m1.num_frozen);
    EXPECT_EQ(m8.num_trainable, m1.num_trainable);
    EXPECT_EQ(m8.frozen_shards * 8, static_cast<uint64_t>(m8.frozen_padded) * 4);
    EXPECT_EQ(m8.masters * 8, static_cast<uint64_t>(m8.trainable_padded) * 4);
    EXPECT_EQ(m8.optimizer, 2 * m8.masters);
    // Padding: each entry starts at a multiple of 64 (< 64 lost before it), each group ends at a
    // multiple of 8 x 64.
    uint64_t padding_elements = 0;
    for (const auto& unit : fake.engine().units())
      for (const auto& g : unit.groups()) padding_elements += g.layout.entries.size() * 63 + 8 * 64;
    const uint64_t padding_bytes = padding_elements * 4;
    EXPECT_LE(m8.frozen_shards * 8 - static_cast<uint64_t>(m1.num_frozen) * 4, padding_bytes);
    EXPECT_LE(m8.masters * 8 - static_cast<uint64_t>(m1.num_trainable) * 4, padding_bytes);
    // What the engine holds is what it reports.
    EXPECT_EQ(shard_bytes(fake.engine(), false, false), m8.frozen_shards);
    EXPECT_EQ(shard_bytes(fake.engine(), true, true), m8.masters);
    // And a step runs end to end in the fake world (values are not meaningful there).
    EXPECT_TRUE(std::isfinite(fake.step(0)));
  }
}

// Per step under ZeRO-3 with recomputation, a rank of 8 all-gathers every block twice (forward,
// and again for its recomputation) and the persistent root once (after the optimizer step), and
// reduce-scatters each trainable group once, each at the ring cost of 7/8 of the full buffer.
TEST(FsdpFakeWorld, TrafficPerStepIsTheRingCostOfTheSchedule) {
  cvx::test::EngineRunOptions o;
  o.lora = false;
  o.global_batch = 8;
  cvx::FakeCommunicator eight(0, 8);
  cvx::test::EngineRun run(eight, o);
  eight.reset_stats();
  run.step(0);
  uint64_t gather = 0, scatter = 0;
  for (const auto& unit : run.engine().units()) {
    for (const auto& g : unit.groups()) {
      const uint64_t full = static_cast<uint64_t>(g.layout.padded_numel) * c10::elementSize(g.layout.dtype);
      gather += (unit.runner_index() >= 0 ? 2 : 1) * full * 7 / 8;
      if (g.layout.trainable) scatter += static_cast<uint64_t>(g.layout.padded_numel) * 4 * 7 / 8;
    }
  }
  EXPECT_EQ(eight.stats().bytes[cvx::CommStats::all_gather], gather);
  EXPECT_EQ(eight.stats().bytes[cvx::CommStats::reduce_scatter], scatter);
}

TEST(FsdpFakeWorld, TheEngineLocksTheModelWhileItHoldsItsParameters) {
  cvx::FakeCommunicator world(0, 8);
  cvx::LoraConfig more;
  more.rank = 2;
  more.alpha = 2;
  more.target_modules = {"ff.net.2"};
  auto run = std::make_unique<cvx::test::EngineRun>(world, cvx::test::EngineRunOptions{});
  auto model = run->model();
  try {
    cvx::inject_lora(*model, more);
    ADD_FAILURE() << "an adapter was added to a flattened model";
  } catch (const cvx::Error& e) {
    EXPECT_NE(e.message().find("flattened by the sharding engine"), std::string::npos) << e.message();
  }
  run.reset();
  cvx::inject_lora(*model, more);  // the engine is gone: the model is the user's again
}

// Mixed precision: bf16 compute shards for every tensor, fp32 masters holding the adapters'
// values before rounding, fp32 gradients; after a step the bf16 shards are the rounded masters.
TEST(FsdpFakeWorld, Bf16PolicyKeepsFp32MastersAndBf16Shards) {
  cvx::test::EngineRunOptions o;
  o.fsdp.precision.param_dtype = torch::kBFloat16;
  o.global_batch = 4;
  cvx::FakeCommunicator world(1, 4);
  const auto original = cvx::test::make_test_model(o);
  std::map<std::string, torch::Tensor> fp32;
  for (const auto& [name, t] : cvx::module_state(*original)) fp32[name] = t;
  cvx::test::EngineRun run(world, o);
  for (const auto& unit : run.engine().units())
    for (const auto& g : unit.groups()) {
      EXPECT_EQ(g.shard.scalar_type(), torch::kBFloat16);
      if (!g.layout.trainable) continue;
      EXPECT_EQ(g.master.scalar_type(), torch::kFloat32);
      EXPECT_EQ(g.grad.scalar_type(), torch::kFloat32);
      // Rank 1's slice of each master equals the fp32 values exactly.
      const auto [begin, end] = unit.shard_range(g);
      for (const auto& e : g.layout.entries) {
        const int64_t lo = std::max(begin, e.offset), hi = std::min(end, e.offset + e.numel);
        if (lo >= hi) continue;
        const auto expected = fp32.at(e.name).reshape({-1}).narrow(0, lo - e.offset, hi - lo);
        EXPECT_TRUE(torch::equal(g.master.narrow(0, lo - begin, hi - lo), expected)) << e.name;
      }
    }
  EXPECT_TRUE(std::isfinite(run.step(0)));
  for (const auto& unit : run.engine().units())
    for (const auto& g : unit.groups())
      if (g.layout.trainable) EXPECT_TRUE(torch::equal(g.shard, g.master.to(torch::kBFloat16))) << unit.name();
}
