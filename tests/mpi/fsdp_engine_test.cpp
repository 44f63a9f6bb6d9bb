// The sharded engine under mpirun (1, 2 and 4 ranks): the same global batch gives the same loss,
// gradient norm and updated parameters as one rank; ZeRO-2 and ZeRO-3 agree exactly; a state
// saved on W ranks loads on every smaller group and continues identically.
//
// Tolerance: the sharded run sums the same fp32 numbers in another order (a batch of G/W per rank,
// then an fp32 average over ranks, against one batch of G) — a few ulps per reduction, observed
// below 1e-6 relative. Losses and norms are compared at rtol 1e-5; parameters after AdamW steps at
// atol 2e-6 per step (lr 1e-3: a step moves an element by about lr, and rounding changes that by
// a relative 1e-5 at most away from zero gradients).
#include <gtest/gtest.h>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"
#include "cvx/dist/mpi_communicator.h"
#include "cvx/io/model_folder.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// A test that throws on one rank leaves the others in a collective; the timeout turns that hang
// into an abort that names the collective.
cvx::CommunicatorOptions test_options() {
  cvx::CommunicatorOptions o;
  o.timeout_s = 120;
  return o;
}
std::unique_ptr<cvx::Communicator> world() {
  return std::make_unique<cvx::MpiCommunicator>(MPI_COMM_WORLD, "world", test_options());
}
std::unique_ptr<cvx::Communicator> self() {
  return std::make_unique<cvx::MpiCommunicator>(MPI_COMM_SELF, "self", test_options());
}

fs::path shared_scratch(const std::string& name) {
  std::string dir;
  if (cvx::mpi_world().rank == 0) dir = cvx::test::scratch_dir(name).string();
  int length = static_cast<int>(dir.size());
  CVX_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD));
  dir.resize(length);
  CVX_MPI(MPI_Bcast(dir.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD));
  return dir;
}

void expect_states_near(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                        double atol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << what << ": " << name;
    const double diff = (t - b.at(name)).abs().max().item<double>();
    EXPECT_LE(diff, atol) << what << ": " << name << " differs by " << diff;
  }
}

void expect_states_equal(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                         const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << what << ": " << name;
}

cvx::test::EngineRunOptions options_for(bool lora, cvx::ShardingStrategy strategy = cvx::ShardingStrategy::full) {
  cvx::test::EngineRunOptions o;
  o.lora = lora;
  o.variant = lora ? "5b" : "1.5-t2v";
  o.fsdp.strategy = strategy;
  return o;
}

}  // namespace

TEST(FsdpEngine, OneStepEqualsOneRankForTheSameGlobalBatch) {
  for (const bool lora : {true, false}) {
    SCOPED_TRACE(lora ? "LoRA" : "full fine-tuning");
    auto one = self();
    auto all = world();
    auto opts = options_for(lora);
    cvx::test::EngineRun reference(*one, opts);
    cvx::test::EngineRun sharded(*all, opts);
    const double loss_1 = reference.step(0);
    const double loss_w = sharded.step(0);
    EXPECT_NEAR(loss_w, loss_1, 1e-5 * std::abs(loss_1));
    EXPECT_NEAR(sharded.last_grad_norm(), reference.last_grad_norm(), 1e-5 * reference.last_grad_norm());
    EXPECT_GT(reference.last_grad_norm(), 0.0);
    const auto expected = reference.full_state();
    const auto got = sharded.full_state();
    if (all->rank() == 0) expect_states_near(got, expected, 2e-6, "after one step");
  }
}

TEST(FsdpEngine, GradientAccumulationEqualsTheWholeBatch) {
  auto one = self();
  auto all = world();
  auto opts = options_for(true);
  opts.global_batch = 4;
  cvx::test::EngineRun whole(*one, opts);
  opts.accumulation = 4 / all->size();  // 4 ranks: 1 micro-step; 2 ranks: 2; 1 rank: 4
  cvx::test::EngineRun accumulated(*all, opts);
  EXPECT_NEAR(accumulated.step(0), whole.step(0), 1e-5);
  EXPECT_NEAR(accumulated.last_grad_norm(), whole.last_grad_norm(), 1e-5 * whole.last_grad_norm());
  const auto expected = whole.full_state(true);
  const auto got = accumulated.full_state(true);
  if (all->rank() == 0) expect_states_near(got, expected, 2e-6, "accumulated");
}

TEST(FsdpEngine, TwentyStepsTrackOneRank) {
  auto one = self();
  auto all = world();
  auto opts = options_for(true);
  cvx::test::EngineRun reference(*one, opts);
  cvx::test::EngineRun sharded(*all, opts);
  double first = 0, last = 0;
  for (int64_t s = 0; s < 20; ++s) {
    const double l1 = reference.step(s % 3);  // a small dataset visited repeatedly: the loss must fall
    const double lw = sharded.step(s % 3);
    EXPECT_NEAR(lw, l1, 1e-4 * std::abs(l1)) << "step " << s;
    if (s == 0) first = l1;
    last = l1;
  }
  EXPECT_LT(last, first);
  const auto expected = reference.full_state(true);
  const auto got = sharded.full_state(true);
  if (all->rank() == 0) expect_states_near(got, expected, 20 * 2e-6, "after 20 steps");
}

TEST(FsdpEngine, Zero2Zero3AndKeptActivationsGiveIdenticalResults) {
  for (const bool lora : {true, false}) {
    SCOPED_TRACE(lora ? "LoRA" : "full fine-tuning");
    auto all = world();
    auto zero3 = options_for(lora, cvx::ShardingStrategy::full);
    auto zero2 = options_for(lora, cvx::ShardingStrategy::grad_optimizer);
    auto kept = zero3;
    kept.fsdp.recompute = false;
    auto no_prefetch = zero3;
    no_prefetch.fsdp.prefetch = false;
    cvx::test::EngineRun a(*all, zero3), b(*all, zero2), c(*all, kept), d(*all, no_prefetch);
    for (int64_t s = 0; s < 3; ++s) {
      const double la = a.step(s);
      EXPECT_EQ(b.step(s), la);
      EXPECT_EQ(c.step(s), la);
      EXPECT_EQ(d.step(s), la);
    }
    const auto sa = a.full_state(true), sb = b.full_state(true), sc = c.full_state(true), sd = d.full_state(true);
    if (all->rank() == 0) {
      expect_states_equal(sb, sa, "ZeRO-2 vs ZeRO-3");
      expect_states_equal(sc, sa, "kept activations vs recomputation");
      expect_states_equal(sd, sa, "without prefetch");
    }
  }
}

TEST(FsdpEngine, ReplicatedStrategyEqualsSharded) {
  auto all = world();
  cvx::test::EngineRun sharded(*all, options_for(false, cvx::ShardingStrategy::full));
  cvx::test::EngineRun replicated(*all, options_for(false, cvx::ShardingStrategy::none));
  for (int64_t s = 0; s < 2; ++s) EXPECT_NEAR(replicated.step(s), sharded.step(s), 1e-6);
  const auto a = sharded.full_state(true), b = replicated.full_state(true);
  if (all->rank() == 0) expect_states_near(b, a, 4e-6, "replicated vs sharded");
}

// Saved on every rank of the world, loaded on groups of every size that divides it (W, W/2, ..., 1):
// each continues exactly as the uninterrupted W-rank run.
TEST(FsdpEngine, StateSavedOnWRanksLoadsOnFewerAndContinuesIdentically) {
  for (const bool lora : {true, false}) {
    SCOPED_TRACE(lora ? "LoRA" : "full fine-tuning");
    auto all = world();
    const auto opts = options_for(lora);
    const fs::path dir = shared_scratch("sharded_state") / "checkpoint-2";
    // The uninterrupted run, on one rank: every rank computes it, so every group can compare.
    auto one = self();
    cvx::test::EngineRun reference(*one, opts);
    for (int64_t s = 0; s < 4; ++s) reference.step(s);
    const auto expected = reference.full_state(true);
    cvx::test::EngineRun run(*all, opts);
    run.step(0);
    run.step(1);
    cvx::save_sharded_state(dir, run.engine(), &run.optimizer(), {{"step", 2}});
    ASSERT_TRUE(fs::exists(dir / "layout.json"));
    for (int size = all->size(); size >= 1; size /= 2) {
      SCOPED_TRACE("loaded on groups of " + std::to_string(size));
      auto group = all->split(all->rank() / size, all->rank(), "group");
      ASSERT_EQ(group->size(), size);
      cvx::test::EngineRun resumed(*group, opts);
      const auto extra = cvx::load_sharded_state(dir, resumed.engine(), &resumed.optimizer());
      EXPECT_EQ(extra.value("step", 0), 2);
      EXPECT_EQ(resumed.optimizer().step_count(), 2);
      resumed.step(2);
      resumed.step(3);
      const auto got = resumed.full_state(true);
      if (group->rank() == 0) expect_states_near(got, expected, 4 * 2e-6, "resumed");
    }
  }
}

TEST(FsdpEngine, LoadingAStateOfAnotherModelNamesTheTensor) {
  auto all = world();
  const fs::path dir = shared_scratch("sharded_state_mismatch") / "checkpoint-1";
  cvx::test::EngineRun lora(*all, options_for(true));
  lora.step(0);
  cvx::save_sharded_state(dir, lora.engine(), &lora.optimizer());
  cvx::test::EngineRun full(*all, options_for(false));
  try {
    cvx::load_sharded_state(dir, full.engine(), &full.optimizer());
    ADD_FAILURE() << "a LoRA checkpoint loaded into full fine-tuning";
  } catch (const cvx::FormatError& e) {
    EXPECT_NE(e.message().find(dir.string()), std::string::npos) << e.message();
  }
}

// Real-size loading, in miniature: unmaterialised model, each rank reads only its slices.
TEST(FsdpEngine, LoadingIntoShardsEqualsLoadingTheWholeModel) {
  auto all = world();
  const fs::path dir = shared_scratch("shard_load");
  auto config = cvx::tiny_transformer("1.5-t2v");
  torch::manual_seed(3);
  cvx::CogVideoXTransformer source_model(config);
  if (all->rank() == 0) cvx::save_safetensors(dir / "w.safetensors", cvx::module_state(*source_model));
  all->barrier();
  const auto weights = cvx::SafetensorsFile::open(dir / "w.safetensors");
  cvx::CogVideoXTransformer model(config, cvx::ModuleInit::unmaterialized(torch::kFloat32));
  cvx::FsdpEngine engine(model->sharding_units(), *all, {}, torch::kCPU);
  const auto report = engine.load(*weights);
  EXPECT_GT(report.num_loaded, 0u);
  std::map<std::string, torch::Tensor> full;
  cvx::gather_full_state(engine, [&](const std::string& n, const torch::Tensor& v) { full[n] = v.clone(); });
  if (all->rank() == 0) {
    for (const auto& [name, t] : cvx::module_state(*source_model)) {
      ASSERT_TRUE(full.count(name)) << name;
      EXPECT_TRUE(torch::equal(full[name], t)) << name;
    }
  }
  // The loaded model computes what the original computes.
  model->set_block_runner(engine.runner());
  const auto latents = torch::randn({1, 2, config.in_channels, 6, 8});
  const auto text = torch::randn({1, 5, config.text_embed_dim});
  const auto t = torch::tensor({500}, torch::kLong);
  const auto rope = cvx::training_rotary_embedding(config, 6, 8, 2);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(latents, text, t, std::nullopt, &rope),
                           source_model->forward(latents, text, t, std::nullopt, &rope)));
  model->set_block_runner({});
}

TEST(FsdpEngine, LoadingWeightsThatDoNotFitListsTheProblems) {
  auto all = world();
  const fs::path dir = shared_scratch("shard_load_bad");
  auto config = cvx::tiny_transformer("5b");
  torch::manual_seed(3);
  cvx::CogVideoXTransformer source_model(config);
  auto state = cvx::module_state(*source_model);
  state.erase(state.begin());                                   // one missing
  state.emplace_back("extra.weight", torch::zeros({2}));        // one unexpected
  state[3].second = torch::zeros({static_cast<int64_t>(7)});   // one mismatched
  if (all->rank() == 0) cvx::save_safetensors(dir / "w.safetensors", state);
  all->barrier();
  const auto weights = cvx::SafetensorsFile::open(dir / "w.safetensors");
  cvx::CogVideoXTransformer model(config, cvx::ModuleInit::unmaterialized(torch::kFloat32));
  cvx::FsdpEngine engine(model->sharding_units(), *all, {}, torch::kCPU);
  try {
    engine.load(*weights);
    ADD_FAILURE() << "bad weights loaded";
  } catch (const cvx::FormatError& e) {
    const std::string m = e.message();
    EXPECT_NE(m.find("1 missing"), std::string::npos) << m;
    EXPECT_NE(m.find("1 mismatched"), std::string::npos) << m;
    EXPECT_NE(m.find("1 unexpected (extra.weight)"), std::string::npos) << m;
  }
}
