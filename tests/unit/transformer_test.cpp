// Properties of the transformer that the golden set does not pin down.
#include <gtest/gtest.h>

#include <numeric>

#include "cvx/core/module_lock.h"
#include "cvx/core/tensor_storage.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/lora.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/tiny_pipeline.h"
#include "cvx/model/transformer.h"
#include "test_util.h"

namespace {

const std::vector<std::string>& kVariants = cvx::released_variants();

struct Batch {
  torch::Tensor latents, text, timestep;
  std::optional<torch::Tensor> ofs;
  cvx::RotaryEmbedding rope;
};

// A batch at the model's sample size (what the learned table of 5b-I2V requires).
Batch batch_for(const cvx::TransformerConfig& c, int64_t batch = 2) {
  Batch b;
  const int64_t frames = c.patch_size_t ? 4 : (c.sample_frames - 1) / c.temporal_compression_ratio + 1;
  const int64_t h = c.use_learned_positional_embeddings ? c.sample_height : 6;
  const int64_t w = c.use_learned_positional_embeddings ? c.sample_width : 8;
  b.latents = torch::randn({batch, frames, c.in_channels, h, w});
  b.text = torch::randn({batch, c.max_text_seq_length, c.text_embed_dim});
  b.timestep = torch::randint(0, 1000, {batch}, torch::kLong);
  if (c.ofs_embed_dim) b.ofs = torch::full({1}, 2.0);
  b.rope = cvx::training_rotary_embedding(c, h, w, frames);
  return b;
}

torch::Tensor run(cvx::CogVideoXTransformer& m, const Batch& b) {
  return m->forward(b.latents, b.text, b.timestep, b.ofs, b.rope.cos.defined() ? &b.rope : nullptr);
}

}  // namespace

TEST(Transformer, EveryVariantMapsLatentsToVelocityOfTheSameShape) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 1);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto out = run(m, b);
    auto expected = b.latents.sizes().vec();
    expected[2] = m->config.out_channels;
    EXPECT_EQ(out.sizes().vec(), expected);
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  }
}

TEST(Transformer, LoraWithZeroBEqualsTheBaseModelExactly) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 2);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto base = run(m, b);
    cvx::LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 2;
    lora.target_modules = {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "proj_out"};
    cvx::inject_lora(*m, lora);
    EXPECT_TRUE(torch::equal(run(m, b), base));
  }
}

TEST(Transformer, GradientCheckpointingGivesTheSameGradients) {
  auto m = cvx::make_tiny_transformer("5b", 3);
  const Batch b = batch_for(m->config);
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    auto latents = b.latents.clone().requires_grad_(true);
    Batch with_grad = b;
    with_grad.latents = latents;
    run(m, with_grad).pow(2).mean().backward();
    std::vector<torch::Tensor> grads{latents.grad().clone()};
    for (const auto& p : m->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_EQ(plain[i].defined(), recomputed[i].defined()) << i;
    if (plain[i].defined()) EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-7)) << "gradient " << i;
  }
}

// bf16 weights and activations stay within 3% of the fp32 output's range (measured ~1%).
TEST(Transformer, Bf16IsCloseToFp32) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 4);
    const Batch b = batch_for(m->config);
    torch::NoGradGuard no_grad;
    const auto reference = run(m, b);
    m->to(torch::kBFloat16);
    const auto low = run(m, b);
    EXPECT_EQ(low.scalar_type(), torch::kBFloat16);
    const double error = (low.to(torch::kFloat32) - reference).abs().max().item<double>();
    EXPECT_LE(error, 0.03 * reference.abs().max().item<double>()) << "max abs error " << error;
  }
}

TEST(Transformer, SavedTinyFolderLoadsBackIdentically) {
  const auto dir = cvx::test::scratch_dir("tiny_transformer");
  cvx::write_tiny_pipeline(dir, "1.5-i2v", 5);
  auto original = cvx::make_tiny_transformer("1.5-i2v", 5);
  auto loaded = cvx::load_transformer(dir / "transformer");
  const Batch b = batch_for(original->config);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(run(original, b), run(loaded, b)));
  auto bf16 = cvx::load_transformer(dir / "transformer", torch::kBFloat16);
  EXPECT_EQ(bf16->dtype(), torch::kBFloat16);
}

// LoRA on a frozen base: checkpointed blocks still deliver the adapter gradients, equal to the
// gradients without checkpointing.
TEST(Transformer, CheckpointingTrainsLoraOnAFrozenBase) {
  auto m = cvx::make_tiny_transformer("1.5-t2v", 6);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  for (auto& p : cvx::lora_parameters(*m)) p.data().normal_(0, 0.1);
  const Batch b = batch_for(m->config);
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    run(m, b).pow(2).mean().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : cvx::lora_parameters(*m)) {
      EXPECT_TRUE(p.grad().defined());
      grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    }
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_GT(plain[i].abs().max().item<double>(), 0.0) << i;
    EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-7)) << "adapter gradient " << i;
  }
  for (const auto& p : m->parameters())
    if (!p.requires_grad()) EXPECT_FALSE(p.grad().defined());
}

// The memory-saving layout: frozen base in bf16, LoRA masters in fp32; gradients land on the fp32
// adapters. fp16 runs where the backend has fp16 kernels (CUDA; libtorch 1.13's CPU has none).
TEST(Transformer, Bf16BaseWithFp32Lora) {
  auto m = cvx::make_tiny_transformer("5b", 7);
  m->to(torch::kBFloat16);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  m->set_gradient_checkpointing(true);
  const Batch b = batch_for(m->config);
  const auto out = run(m, b);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  out.to(torch::kFloat32).pow(2).mean().backward();
  for (const auto& p : cvx::lora_parameters(*m)) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
  }
}

TEST(Transformer, Fp16WhereTheBackendHasKernels) {
  auto half = cvx::make_tiny_transformer("2b", 7);
  half->to(torch::kFloat16);
  try {
    torch::NoGradGuard no_grad;
    const auto y = run(half, batch_for(half->config));
    EXPECT_EQ(y.scalar_type(), torch::kFloat16);
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  } catch (const c10::Error& e) {
    if (std::string(e.what()).find("Half") == std::string::npos) throw;
    GTEST_SKIP() << "no fp16 kernels on this backend: " << std::string(e.what()).substr(0, 80);
  }
}

// ---------------------------------------------------------------- the seam for the sharding engine

TEST(TransformerSeam, BlockRunnerRunsEveryBlockInOrderWithAndWithoutGradients) {
  auto m = cvx::make_tiny_transformer("1.5-t2v", 8);
  const Batch b = batch_for(m->config);
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = run(m, b);
  }
  std::vector<int64_t> seen;
  m->set_block_runner([&](int64_t index, const cvx::UnitFn& fn, const torch::autograd::variable_list& inputs) {
    seen.push_back(index);
    EXPECT_EQ(inputs.size(), 3u);  // hidden, encoder, temb
    return fn(inputs);
  });
  std::vector<int64_t> expected(m->config.num_layers);
  std::iota(expected.begin(), expected.end(), 0);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(run(m, b), reference));
  }
  EXPECT_EQ(seen, expected);
  seen.clear();
  const auto out = run(m, b);  // gradient path: the runner is used there too
  EXPECT_TRUE(out.requires_grad());
  EXPECT_TRUE(torch::equal(out.detach(), reference));
  EXPECT_EQ(seen, expected);
  m->set_block_runner({});
  seen.clear();
  run(m, b);
  EXPECT_TRUE(seen.empty());
}

TEST(TransformerSeam, ShardingUnitsHoldEveryParameterAndBufferOnceUnderItsCheckpointKey) {
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v);
    auto m = cvx::make_tiny_transformer(v, 9);
    cvx::LoraConfig lora;
    lora.rank = 2;
    lora.alpha = 2;
    lora.target_modules = {"to_q", "proj_out"};  // a root layer too
    cvx::inject_lora(*m, lora);
    const auto units = m->sharding_units();
    ASSERT_EQ(static_cast<int64_t>(units.size()), m->config.num_layers + 1);
    EXPECT_EQ(units[0].runner_index, -1);
    std::map<std::string, const torch::TensorImpl*> listed;
    for (size_t u = 0; u < units.size(); ++u) {
      if (u > 0) {
        EXPECT_EQ(units[u].runner_index, static_cast<int64_t>(u - 1));
        EXPECT_EQ(units[u].name, "transformer_blocks." + std::to_string(u - 1));
      }
      for (const auto* list : {&units[u].parameters, &units[u].buffers})
        for (const auto& [name, t] : *list) {
          EXPECT_TRUE(listed.emplace(name, t.unsafeGetTensorImpl()).second) << "listed twice: " << name;
          if (u > 0) EXPECT_EQ(name.rfind(units[u].name + ".", 0), 0u) << name;
        }
    }
    const auto state = cvx::module_state(*m);
    EXPECT_EQ(listed.size(), state.size());
    for (const auto& [name, t] : state) {
      ASSERT_TRUE(listed.count(name)) << "not in any unit: " << name;
      EXPECT_EQ(listed[name], t.unsafeGetTensorImpl()) << name << " is listed as another tensor";
    }
    EXPECT_TRUE(listed.count("proj_out.lora_A.weight"));
  }
}

// The 5b shape at full size (about 5.6 B parameters) built on the CPU: nothing is allocated, yet
// every shape is there for the sharding engine to plan with.
TEST(TransformerSeam, UnmaterializedConstructionAllocatesNothing) {
  auto m = cvx::CogVideoXTransformer(cvx::cogvideox_5b(), cvx::ModuleInit::unmaterialized(torch::kBFloat16));
  int64_t numel = 0;
  size_t bytes = 0;
  for (const auto& [name, t] : cvx::module_state(*m)) {
    EXPECT_FALSE(cvx::is_materialized(t)) << name;
    EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << name;
    numel += t.numel();
    bytes += t.storage().nbytes();
  }
  EXPECT_EQ(bytes, 0u);
  EXPECT_GT(numel, int64_t{5'000'000'000});
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  // Adapters can still be added (they are small and materialised) before the engine flattens.
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  cvx::inject_lora(*m, lora);
  EXPECT_TRUE(
      cvx::is_materialized(m->transformer_blocks->ptr<cvx::TransformerBlockImpl>(0)->attn1->to_q->lora_A->weight));
}

TEST(TransformerSeam, ComputeDtypeIsHeldExplicitly) {
  auto m = cvx::make_tiny_transformer("5b", 10);
  EXPECT_EQ(m->dtype(), torch::kFloat32);
  m->set_compute_dtype(torch::kBFloat16);  // e.g. fp32 masters, bf16 compute copies swapped in by an engine
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  EXPECT_EQ(m->time_embedding->linear_1->weight.scalar_type(), torch::kFloat32);
  m->to(torch::kBFloat16);
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
}

TEST(TransformerSeam, LockedModelRefusesStructureChangesWithTheReason) {
  auto m = cvx::make_tiny_transformer("5b", 11);
  cvx::LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 2;
  cvx::inject_lora(*m, lora);
  const auto dir = cvx::test::scratch_dir("locked_model");
  cvx::save_safetensors(dir / "w.safetensors", cvx::module_state(*m));
  const auto weights = cvx::SafetensorsFile::open(dir / "w.safetensors");
  cvx::lock_module_structure(*m, "flattened by the test");
  auto expect_refusal = [](const std::function<void()>& fn, const std::string& action) {
    try {
      fn();
      ADD_FAILURE() << "not refused: " << action;
    } catch (const cvx::Error& e) {
      EXPECT_NE(e.message().find(action), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("flattened by the test"), std::string::npos) << e.message();
    }
  };
  expect_refusal([&] { cvx::inject_lora(*m, lora); }, "add a LoRA adapter");
  expect_refusal([&] { cvx::merge_lora(*m); }, "merge a LoRA adapter");
  expect_refusal([&] { cvx::remove_lora(*m); }, "remove a LoRA adapter");
  expect_refusal([&] { cvx::load_state(*m, *weights); }, "load weights");
  cvx::set_lora_multiplier(*m, 0.5);  // strength is no structure change
  cvx::unlock_module_structure(*m);
  cvx::merge_lora(*m);
  cvx::unmerge_lora(*m);
  cvx::load_state(*m, *weights);
}

// Dropout masks drawn in forward are drawn again, identically, when a checkpointed block is
// recomputed in backward (the generator state is replayed), so LoRA dropout trains correctly.
TEST(TransformerSeam, CheckpointingWithLoraDropoutGivesTheGradientsOfNoCheckpointing) {
  auto m = cvx::make_tiny_transformer("5b", 12);
  cvx::LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 4;
  lora.dropout = 0.5;
  cvx::inject_lora(*m, lora);
  cvx::mark_only_lora_trainable(*m);
  for (auto& p : cvx::lora_parameters(*m)) p.data().normal_(0, 0.1);
  m->train();
  const Batch b = batch_for(m->config);
  auto gradients = [&](bool checkpointing) {
    m->zero_grad();
    m->set_gradient_checkpointing(checkpointing);
    torch::manual_seed(77);
    run(m, b).pow(2).mean().backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : cvx::lora_parameters(*m)) grads.push_back(p.grad().clone());
    return grads;
  };
  const auto plain = gradients(false);
  const auto recomputed = gradients(true);
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], 1e-5, 1e-7)) << "adapter gradient " << i;
}

// Sequence parallelism compares a slice of the model's token outputs with the same slice of the
// target: patchify must be unpatchify's exact inverse (a permutation), and forward the unpatchified
// forward_tokens.
TEST(Transformer, PatchifyInvertsUnpatchifyAndForwardIsUnpatchifiedTokens) {
  for (const std::string variant : {"2b", "1.5-t2v"}) {
    const auto config = cvx::tiny_transformer(variant);
    torch::manual_seed(3);
    cvx::CogVideoXTransformer model(config);
    const int64_t frames = config.patch_size_t ? 4 : 3;
    const auto x = torch::randn({2, frames, config.out_channels, config.sample_height, config.sample_width});
    const auto tokens = model->patchify(x);
    EXPECT_TRUE(torch::equal(model->unpatchify(tokens, frames, x.size(3), x.size(4)), x)) << variant;
    EXPECT_EQ(tokens.size(2),
              config.out_channels * config.patch_size * config.patch_size * config.patch_size_t.value_or(1))
        << variant;
  }
}
