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

#include <fstream>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"
#include "cvx/core/tensor_storage.h"
#include "cvx/dist/mpi_communicator.h"
#include "cvx/io/model_folder.h"
#include "engine_test_util.h"
#include "mpi/mpi_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::shared_scratch;

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

// `state` written by rank 0 into a shared scratch file that every rank then maps.
std::shared_ptr<cvx::SafetensorsFile> shared_weights(cvx::Communicator& all, const std::string& name,
                                                     const cvx::NamedTensors& state) {
  const fs::path file = shared_scratch(name) / "w.safetensors";
  if (all.rank() == 0) cvx::save_safetensors(file, state);
  all.barrier();
  return cvx::SafetensorsFile::open(file);
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
  auto config = cvx::tiny_transformer("1.5-t2v");
  torch::manual_seed(3);
  cvx::CogVideoXTransformer source_model(config);
  const auto weights = shared_weights(*all, "shard_load", cvx::module_state(*source_model));
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
  auto config = cvx::tiny_transformer("5b");
  torch::manual_seed(3);
  cvx::CogVideoXTransformer source_model(config);
  auto state = cvx::module_state(*source_model);
  state.erase(state.begin());                                 // one missing
  state.emplace_back("extra.weight", torch::zeros({2}));      // one unexpected
  state[3].second = torch::zeros({static_cast<int64_t>(7)});  // one mismatched
  const auto weights = shared_weights(*all, "shard_load_bad", state);
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

// Odd shapes against alignment and world size: each rank holds exactly its slice, the padding is
// zero, and gathering the shards gives back every tensor bit for bit.
TEST(FlatParam, ShardAndGatherRoundTripWithOddSizesAndPadding) {
  auto all = world();
  torch::manual_seed(21);
  const std::vector<std::vector<int64_t>> shapes{{7}, {3, 5}, {1}, {13, 1, 3}, {64}, {2, 33}};
  cvx::ShardingUnit unit;
  unit.name = "odd";
  unit.runner_index = 0;
  std::vector<torch::Tensor> originals;
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto t = torch::randn(shapes[i]).requires_grad_(i % 2 == 0);
    originals.push_back(t.detach().clone());
    unit.parameters.emplace_back("t" + std::to_string(i), t);
  }
  for (const int64_t alignment : {1, 8, 64}) {
    SCOPED_TRACE("alignment " + std::to_string(alignment));
    std::vector<torch::Tensor> tensors;
    cvx::ShardingUnit copy = unit;
    for (size_t i = 0; i < copy.parameters.size(); ++i) {
      copy.parameters[i].second = originals[i].clone().requires_grad_(i % 2 == 0);
      tensors.push_back(copy.parameters[i].second);
    }
    cvx::FlatParamUnit flat(copy, {}, all->rank(), all->size(), true, alignment, torch::kCPU, true);
    ASSERT_EQ(flat.groups().size(), 2u);  // trainable and frozen fp32
    flat.flatten();
    for (const auto& g : flat.groups()) {
      EXPECT_EQ(g.layout.padded_numel % (all->size() * alignment), 0);
      EXPECT_EQ(g.shard.numel() * all->size(), g.layout.padded_numel);
      for (const auto& e : g.layout.entries) EXPECT_EQ(e.offset % alignment, 0) << e.name;
    }
    if (all->size() > 1) {
      for (const auto& t : tensors) EXPECT_FALSE(cvx::is_materialized(t));
    }
    flat.unshard_async(*all);
    flat.wait_unshard();
    for (size_t i = 0; i < tensors.size(); ++i) EXPECT_TRUE(torch::equal(tensors[i], originals[i])) << "t" << i;
    for (const auto& g : flat.groups()) {
      // Padding (every element outside an entry) is zero in the gathered buffer.
      auto mask = torch::ones({g.layout.padded_numel}, torch::kBool);
      for (const auto& e : g.layout.entries) mask.narrow(0, e.offset, e.numel).fill_(false);
      EXPECT_EQ(g.full.masked_select(mask).abs().sum().item<double>(), 0.0);
    }
    flat.reshard();
    if (all->size() > 1) EXPECT_FALSE(cvx::is_materialized(tensors[0]));
  }
}

// Under ZeRO-3 at most two blocks are gathered at any time (the running one and the prefetched
// next); under ZeRO-2 every block stays gathered from its forward to its backward. Only trainable
// groups are reduced: LoRA on a frozen base reduce-scatters one group per block.
TEST(FsdpEngine, AtMostTwoUnitsGatheredAndOnlyTrainableGroupsReduced) {
  auto all = world();
  for (const auto strategy : {cvx::ShardingStrategy::full, cvx::ShardingStrategy::grad_optimizer}) {
    cvx::test::EngineRun run(*all, options_for(true, strategy));
    auto& engine = run.engine();
    int most = 0;
    const auto inner = engine.runner();
    run.model()->set_block_runner([&](int64_t i, const cvx::UnitFn& fn, const torch::autograd::variable_list& in) {
      auto wrapped = [&, fn](const torch::autograd::variable_list& x) {
        most = std::max(most, engine.num_unsharded_runner_units());
        return fn(x);
      };
      return inner(i, wrapped, in);
    });
    all->reset_stats();
    run.step(0);
    if (all->size() == 1) {
      EXPECT_EQ(most, 0);  // nothing is sharded on one rank
    } else if (strategy == cvx::ShardingStrategy::full) {
      EXPECT_EQ(most, 2);
    } else {
      EXPECT_EQ(most, 4);  // all four blocks by the first backward
    }
    // 4 blocks with adapters + the root (proj_out's adapter): 5 trainable groups reduced per step.
    if (all->size() > 1) EXPECT_EQ(all->stats().calls[cvx::CommStats::reduce_scatter], 5u);
  }
}

// Hybrid sharding: shards over half the ranks, replicated across the two halves, equals sharding
// over all of them.
TEST(FsdpEngine, HybridShardingEqualsShardingOverTheWholeWorld) {
  auto all = world();
  if (all->size() < 2) GTEST_SKIP() << "needs 2 ranks or more";
  const int half = all->size() / 2;
  auto shard = all->split(all->rank() / half, all->rank(), "shard");
  auto replicate = all->split(all->rank() % half, all->rank(), "replicate");
  auto opts = options_for(false);
  cvx::test::EngineRun flat(*all, opts);
  const double expected = flat.step(0);
  const auto expected_state = flat.full_state(true);
  // The hybrid run: each replica (half of the world) takes half of the global batch.
  cvx::test::EngineRunOptions hopts = opts;
  hopts.global_batch = opts.global_batch / 2;
  torch::manual_seed(static_cast<int64_t>(hopts.seed));
  cvx::test::EngineRun hybrid(*shard, hopts, replicate.get());
  const double got = hybrid.step(0, /*sample_offset=*/replicate->rank() * hopts.global_batch);
  // The loss is averaged over the shard group only; average over the replicas too.
  auto both = torch::tensor({got}, torch::kFloat64);
  replicate->all_reduce(both, cvx::ReduceOp::avg)->wait();
  EXPECT_NEAR(both.item<double>(), expected, 1e-5 * std::abs(expected));
  const auto state = hybrid.full_state(true);
  if (all->rank() == 0) expect_states_near(state, expected_state, 2e-6, "hybrid");
}

// The full model streamed to disk unit by unit from W ranks is byte for byte what one process
// writes with save_safetensors from the unsharded model (same names, order and layout).
TEST(FsdpEngine, StreamedFullStateEqualsTheUnshardedModelFile) {
  auto all = world();
  const fs::path dir = shared_scratch("full_state");
  for (const bool lora : {true, false}) {
    SCOPED_TRACE(lora ? "LoRA" : "full fine-tuning");
    auto opts = options_for(lora);
    cvx::test::EngineRun run(*all, opts);
    cvx::FullStateOptions o;
    o.max_shard_bytes = 40'000;  // several shards + index, as a 5B export would have
    for (const auto& [name, t] : cvx::module_state(*run.model())) o.order.push_back(name);
    const fs::path out = dir / (lora ? "lora" : "full");
    const auto written = cvx::save_full_state(run.engine(), out, "diffusion_pytorch_model", o);
    if (all->rank() != 0) continue;
    ASSERT_FALSE(written.index.empty());
    // The reference: the same model (same seed), never sharded, written the usual way.
    auto one = self();
    cvx::test::EngineRunOptions plain = opts;
    plain.fsdp.strategy = cvx::ShardingStrategy::none;
    cvx::test::EngineRun reference(*one, plain);
    const auto values = reference.full_state();
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& name : o.order) tensors.emplace_back(name, values.at(name));
    const fs::path ref_dir = dir / (lora ? "lora_ref" : "full_ref");
    fs::create_directories(ref_dir);
    const auto expected =
        cvx::save_safetensors_sharded(ref_dir, "diffusion_pytorch_model", tensors, o.max_shard_bytes, o.metadata);
    ASSERT_EQ(written.files.size(), expected.files.size());
    auto bytes = [](const fs::path& p) {
      std::ifstream in(p, std::ios::binary);
      return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    for (size_t i = 0; i < written.files.size(); ++i)
      EXPECT_TRUE(bytes(written.files[i]) == bytes(expected.files[i])) << written.files[i] << " differs";
    EXPECT_TRUE(bytes(written.index) == bytes(expected.index)) << written.index << " differs";
  }
}

// The bf16 policy across ranks: bf16 shards gathered bit for bit (16-bit words), gradients reduced
// in fp32. The per-rank batches differ in size from the one-rank batch, and bf16 matmuls round
// per batch layout, so losses and norms agree to bf16 precision (rtol 2e-2), not to fp32's.
TEST(FsdpEngine, Bf16PolicyAgreesWithOneRankToBf16Precision) {
  auto one = self();
  auto all = world();
  auto opts = options_for(true);
  opts.fsdp.precision.param_dtype = torch::kBFloat16;
  cvx::test::EngineRun reference(*one, opts);
  cvx::test::EngineRun sharded(*all, opts);
  for (int64_t s = 0; s < 2; ++s) {
    const double l1 = reference.step(s), lw = sharded.step(s);
    EXPECT_NEAR(lw, l1, 2e-2 * std::abs(l1)) << "step " << s;
    EXPECT_NEAR(sharded.last_grad_norm(), reference.last_grad_norm(), 2e-2 * reference.last_grad_norm());
  }
}

// Random weights for benchmarks: an unmaterialised model filled tensor by tensor through the
// engine (the full model never exists); every rank's shards together hold exactly what the init
// function produced for each tensor.
TEST(FsdpEngine, InitializeFillsUnmaterializedTensorsOneAtATime) {
  auto all = world();
  const auto config = cvx::tiny_transformer("5b");
  cvx::CogVideoXTransformer model(config, cvx::ModuleInit::unmaterialized(torch::kFloat32));
  cvx::FsdpEngine engine(model->sharding_units(), *all, {}, torch::kCPU);
  auto init = [](const std::string& name, torch::Tensor& values) {
    auto gen = at::detail::createCPUGenerator(std::hash<std::string>{}(name));
    values.normal_(0.0, 0.02, gen);
  };
  int64_t calls = 0;
  engine.initialize([&](const std::string& name, torch::Tensor& values) {
    ++calls;
    init(name, values);
  });
  EXPECT_EQ(calls, static_cast<int64_t>(cvx::module_state(*model).size()));
  std::map<std::string, torch::Tensor> full;
  cvx::gather_full_state(engine, [&](const std::string& n, const torch::Tensor& v) { full[n] = v.clone(); });
  if (all->rank() == 0) {
    ASSERT_EQ(full.size(), static_cast<size_t>(calls));
    for (const auto& [name, value] : full) {
      auto expected = torch::empty(value.sizes());
      init(name, expected);
      EXPECT_TRUE(torch::equal(value, expected)) << name;
    }
  }
}
