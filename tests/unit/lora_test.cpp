#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/io/safetensors.h"
#include "cvx/model/lora.h"
#include "cvx/model/lora_linear.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// A module tree addressed by dotted names, so tests get diffusers-like paths
// ("transformer_blocks.0.attn1.to_q") without a transformer.
struct Node : torch::nn::Module {
  cvx::LoRALinear add(const std::string& dotted, int64_t in, int64_t out, bool bias = true) {
    torch::nn::Module* parent = this;
    std::string rest = dotted;
    for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
      const std::string part = rest.substr(0, dot);
      rest = rest.substr(dot + 1);
      auto children = parent->named_children();
      if (const auto* child = children.find(part)) {
        parent = child->get();
      } else {
        parent = parent->register_module(part, std::make_shared<Node>()).get();
      }
    }
    return parent->register_module(rest, cvx::LoRALinear(in, out, bias));
  }
};

constexpr int64_t kDim = 8;

// Two blocks of attention projections plus decoys for suffix matching.
std::shared_ptr<Node> make_tree() {
  auto root = std::make_shared<Node>();
  for (int i = 0; i < 2; ++i) {
    const std::string p = "transformer_blocks." + std::to_string(i) + ".";
    for (const char* name : {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"})
      root->add(p + name, kDim, kDim);
    root->add(p + "ff.net.0.proj", kDim, 2 * kDim);
    root->add(p + "ff.net.2", 2 * kDim, kDim, false);
  }
  root->add("transformer_blocks.0.attn1.to_out.1", kDim, kDim);  // a decoy (diffusers has Dropout there)
  root->add("transformer_blocks.0.attn1.to_qx", kDim, kDim);     // a decoy for "to_q"
  root->add("proj_out", kDim, 4);
  return root;
}

std::map<std::string, std::shared_ptr<cvx::LoRALinearImpl>> layer_map(const torch::nn::Module& root) {
  std::map<std::string, std::shared_ptr<cvx::LoRALinearImpl>> out;
  for (auto& [name, layer] : cvx::lora_linears(root)) out.emplace(name, layer);
  return out;
}

// Every layer applied to a fixed input, concatenated: "the model's output" for comparisons. [N]
torch::Tensor tree_output(const torch::nn::Module& root) {
  std::vector<torch::Tensor> parts;
  torch::NoGradGuard no_grad;
  torch::manual_seed(1000);  // the same inputs on every call
  for (auto& [name, layer] : layer_map(root)) {
    const auto x = torch::randn({3, layer->in_features()});  // [3, in]
    parts.push_back(layer->forward(x).flatten());
  }
  return torch::cat(parts);
}

void copy_base(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto src = layer_map(from);
  for (auto& [name, layer] : layer_map(to)) {
    layer->weight.copy_(src.at(name)->weight);
    if (layer->bias.defined()) layer->bias.copy_(src.at(name)->bias);
  }
}

// lora_B ~ N(0, stddev) for every adapter of `root`, `root` itself included (B = 0 would hide bugs).
void randomize_b(const torch::nn::Module& root, double stddev = 0.2) {
  torch::NoGradGuard no_grad;
  if (const auto* self = dynamic_cast<const cvx::LoRALinearImpl*>(&root); self && self->has_lora())
    self->lora_B->weight.normal_(0.0, stddev);
  for (auto& [name, layer] : cvx::lora_linears(root))
    if (layer->has_lora()) layer->lora_B->weight.normal_(0.0, stddev);
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> file_keys(const fs::path& file) { return cvx::SafetensorsFile::open(file)->names(); }

}  // namespace

// ------------------------------------------------------------------------------------------ LoRALinear

TEST(LoraLinear, FreshAdapterIsThePlainLinear) {
  torch::manual_seed(0);
  for (bool bias : {true, false}) {
    cvx::LoRALinear layer(12, 7, bias);
    const auto x = torch::randn({2, 5, 12});
    const auto plain = torch::linear(x, layer->weight, layer->bias);
    EXPECT_TRUE(torch::equal(layer(x), plain));
    layer->enable_lora(4, 8.0);
    EXPECT_TRUE(layer->has_lora());
    EXPECT_EQ(layer->lora_rank(), 4);
    EXPECT_DOUBLE_EQ(layer->scaling(), 2.0);
    EXPECT_TRUE(torch::equal(layer(x), plain)) << "bias " << bias;
    EXPECT_EQ(layer->named_parameters().size(), bias ? 4u : 3u);
  }
}

TEST(LoraLinear, ParameterNamesFollowPeft) {
  cvx::LoRALinear layer(4, 3);
  std::vector<std::string> names;
  for (const auto& p : layer->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
  layer->enable_lora(2, 2.0);
  names.clear();
  for (const auto& p : layer->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias", "lora_A.weight", "lora_B.weight"}));
  layer->disable_lora();
  EXPECT_FALSE(layer->has_lora());
  EXPECT_EQ(layer->named_parameters().size(), 2u);
}

TEST(LoraLinear, PeftInitStatistics) {
  torch::manual_seed(1);
  const int64_t in = 256;
  cvx::LoRALinear layer(in, 64);
  layer->enable_lora(32, 16.0);
  const auto a = layer->lora_A->weight.detach();
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform(a=sqrt(5)) on fan_in
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{32, in}));
  EXPECT_EQ(a.scalar_type(), torch::kFloat32);
  EXPECT_LE(a.abs().max().item<double>(), bound);
  EXPECT_GT(a.abs().max().item<double>(), 0.99 * bound);
  EXPECT_LT(std::abs(a.mean().item<double>()), 0.02 * bound);
  EXPECT_NEAR(a.var().item<double>(), bound * bound / 3.0, 0.05 * bound * bound / 3.0);
  EXPECT_EQ(layer->lora_B->weight.sizes(), (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(layer->lora_B->weight.count_nonzero().item<int64_t>(), 0);
  EXPECT_FALSE(layer->lora_A->bias.defined());
  EXPECT_FALSE(layer->lora_B->bias.defined());
  EXPECT_TRUE(layer->lora_A->weight.requires_grad());
}

TEST(LoraLinear, ForwardIsBasePlusScaledUpdate) {
  torch::manual_seed(2);
  cvx::LoRALinear layer(6, 5);
  layer->enable_lora(3, 1.5);
  randomize_b(*layer);
  layer->set_lora_multiplier(0.7);
  EXPECT_DOUBLE_EQ(layer->scaling(), 1.5 / 3 * 0.7);
  const auto x = torch::randn({4, 6});
  const auto w = layer->weight + layer->scaling() * torch::matmul(layer->lora_B->weight, layer->lora_A->weight);
  EXPECT_LT(max_abs_diff(layer(x), torch::linear(x, w, layer->bias)), 1e-6);
}

TEST(LoraLinear, MergeEqualsUnmergedAndUnmergeRestores) {
  torch::manual_seed(3);
  cvx::LoRALinear layer(32, 24);
  layer->enable_lora(8, 4.0);
  randomize_b(*layer);
  const auto w0 = layer->weight.detach().clone();
  const auto x = torch::randn({5, 32});
  const auto unmerged = layer(x);
  layer->merge();
  EXPECT_TRUE(layer->merged());
  EXPECT_FALSE(torch::equal(layer->weight, w0));
  EXPECT_LT(max_abs_diff(layer(x), unmerged), 1e-6);
  EXPECT_THROW(layer->set_lora_multiplier(2.0), cvx::Error);
  EXPECT_THROW(layer->enable_lora(2, 2.0), cvx::Error);
  layer->merge();  // a second merge is a no-op
  EXPECT_LT(max_abs_diff(layer(x), unmerged), 1e-6);
  layer->unmerge();
  EXPECT_FALSE(layer->merged());
  EXPECT_LE(max_abs_diff(layer->weight, w0), 1e-7);
  EXPECT_TRUE(torch::equal(layer(x), unmerged) || max_abs_diff(layer(x), unmerged) < 1e-6);
  // disable_lora on a merged adapter restores the base first.
  layer->merge();
  layer->disable_lora();
  EXPECT_LE(max_abs_diff(layer->weight, w0), 1e-7);
}

TEST(LoraLinear, FiniteDifferenceGradients) {
  torch::manual_seed(4);
  cvx::LoRALinear layer(5, 4);
  layer->to(torch::kFloat64);
  layer->enable_lora(3, 6.0, 0.0, torch::kFloat64);
  randomize_b(*layer, 1.0);
  const auto x = torch::randn({2, 5}, torch::kFloat64).requires_grad_(true);
  const auto probe = torch::randn({2, 4}, torch::kFloat64);
  const auto f = [&] { return (layer(x) * probe).sum(); };
  const std::vector<torch::Tensor> wrt{layer->lora_A->weight, layer->lora_B->weight, x};
  const auto grads = torch::autograd::grad({f()}, wrt);
  const double eps = 1e-6;
  for (size_t t = 0; t < wrt.size(); ++t) {
    torch::NoGradGuard no_grad;
    auto flat = wrt[t].view({-1});
    auto numeric = torch::zeros_like(flat);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double saved = flat[i].item<double>();
      flat[i].fill_(saved + eps);
      const double plus = f().item<double>();
      flat[i].fill_(saved - eps);
      const double minus = f().item<double>();
      flat[i].fill_(saved);
      numeric[i].fill_((plus - minus) / (2 * eps));
    }
    EXPECT_LT(max_abs_diff(grads[t].view({-1}), numeric), 1e-7) << "tensor " << t;
  }
}

TEST(LoraLinear, Bf16BaseWithFloat32Adapter) {
  torch::manual_seed(5);
  cvx::LoRALinear layer(16, 8);
  layer->to(torch::kBFloat16);
  layer->enable_lora(4, 4.0);  // float32 masters on a bf16 base
  randomize_b(*layer);
  EXPECT_EQ(layer->lora_A->weight.scalar_type(), torch::kFloat32);
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  const auto reference =
      torch::linear(x.to(torch::kFloat32), layer->weight.to(torch::kFloat32), layer->bias.to(torch::kFloat32)) +
      torch::linear(torch::linear(x.to(torch::kFloat32), layer->lora_A->weight), layer->lora_B->weight);

  layer->freeze_base(true);
  auto y = layer(x);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_LT(max_abs_diff(y, reference), 0.05);
  y.to(torch::kFloat32).sum().backward();
  EXPECT_TRUE(layer->lora_A->weight.grad().defined());
  EXPECT_TRUE(layer->lora_B->weight.grad().defined());
  EXPECT_EQ(layer->lora_A->weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_GT(layer->lora_A->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(layer->weight.grad().defined());
  EXPECT_FALSE(layer->bias.grad().defined());

  layer->freeze_base(false);
  layer(x).to(torch::kFloat32).sum().backward();
  EXPECT_TRUE(layer->weight.grad().defined());
  EXPECT_EQ(layer->weight.grad().scalar_type(), torch::kBFloat16);

  // Merging a float32 adapter into a bf16 weight keeps the weight bf16.
  layer->merge();
  EXPECT_EQ(layer->weight.scalar_type(), torch::kBFloat16);
  EXPECT_LT(max_abs_diff(layer(x), reference), 0.1);
}

TEST(LoraLinear, DropoutOnlyWhileTraining) {
  torch::manual_seed(6);
  cvx::LoRALinear layer(64, 64);
  layer->enable_lora(8, 8.0, 0.5);
  randomize_b(*layer);
  const auto x = torch::randn({4, 64});
  layer->eval();
  EXPECT_TRUE(torch::equal(layer(x), layer(x)));
  layer->train();
  EXPECT_FALSE(torch::equal(layer(x), layer(x)));
}

// ------------------------------------------------------------------------------------------ injection

TEST(LoraInject, SuffixMatchingAtDotBoundaries) {
  EXPECT_TRUE(cvx::lora_target_matches("transformer_blocks.0.attn1.to_q", "to_q"));
  EXPECT_TRUE(cvx::lora_target_matches("to_q", "to_q"));
  EXPECT_FALSE(cvx::lora_target_matches("transformer_blocks.0.attn1.to_qx", "to_q"));
  EXPECT_FALSE(cvx::lora_target_matches("transformer_blocks.0.attn1.xto_q", "to_q"));
  EXPECT_TRUE(cvx::lora_target_matches("a.attn1.to_out.0", "to_out.0"));
  EXPECT_FALSE(cvx::lora_target_matches("a.attn1.to_out.1", "to_out.0"));
  EXPECT_FALSE(cvx::lora_target_matches("a.attn1.to_out.0", ""));

  auto root = make_tree();
  cvx::LoraConfig config;
  config.rank = 4;
  config.alpha = 2.0;
  const auto modules = cvx::inject_lora(*root, config);
  const std::vector<std::string> expected{"transformer_blocks.0.attn1.to_k", "transformer_blocks.0.attn1.to_out.0",
                                          "transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v",
                                          "transformer_blocks.1.attn1.to_k", "transformer_blocks.1.attn1.to_out.0",
                                          "transformer_blocks.1.attn1.to_q", "transformer_blocks.1.attn1.to_v"};
  EXPECT_EQ(modules, expected);
  for (auto& [name, layer] : layer_map(*root)) {
    const bool want = std::find(expected.begin(), expected.end(), name) != expected.end();
    EXPECT_EQ(layer->has_lora(), want) << name;
    if (want) EXPECT_DOUBLE_EQ(layer->scaling(), 0.5) << name;
  }

  auto other = make_tree();
  config.target_modules = {"ff.net.0.proj", "to_out.1"};
  EXPECT_EQ(cvx::inject_lora(*other, config),
            (std::vector<std::string>{"transformer_blocks.0.attn1.to_out.1", "transformer_blocks.0.ff.net.0.proj",
                                      "transformer_blocks.1.ff.net.0.proj"}));
  EXPECT_EQ(layer_map(*other).at("transformer_blocks.0.ff.net.0.proj")->lora_B->weight.sizes(),
            (std::vector<int64_t>{2 * kDim, 4}));
}

TEST(LoraInject, UnmatchedTargetIsAConfigError) {
  auto root = make_tree();
  cvx::LoraConfig config;
  config.target_modules = {"to_q", "to_query"};
  const std::string message = error_of<cvx::ConfigError>([&] { cvx::inject_lora(*root, config); });
  EXPECT_NE(message.find("\"to_query\""), std::string::npos) << message;
  EXPECT_NE(message.find("to_out.0"), std::string::npos) << message;  // lists available layer names
  EXPECT_NE(message.find("transformer_blocks.0.attn1.to_q"), std::string::npos) << message;
  for (auto& [name, layer] : layer_map(*root)) EXPECT_FALSE(layer->has_lora()) << name;  // nothing changed
  config.target_modules = {"to_q"};
  config.rank = 0;
  EXPECT_THROW(cvx::inject_lora(*root, config), cvx::ConfigError);
}

TEST(LoraInject, StateParametersAndTrainability) {
  auto root = make_tree();
  cvx::LoraConfig config;
  config.rank = 2;
  config.target_modules = {"to_v", "proj_out"};
  cvx::inject_lora(*root, config);
  const auto state = cvx::lora_state(*root);
  std::vector<std::string> names;
  for (const auto& [name, t] : state) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "proj_out.lora_A.weight", "proj_out.lora_B.weight", "transformer_blocks.0.attn1.to_v.lora_A.weight",
                "transformer_blocks.0.attn1.to_v.lora_B.weight", "transformer_blocks.1.attn1.to_v.lora_A.weight",
                "transformer_blocks.1.attn1.to_v.lora_B.weight"}));
  // The adapter names are those of module_state, so trainer checkpoints and load_state agree.
  std::set<std::string> all;
  for (const auto& [name, t] : cvx::module_state(*root)) all.insert(name);
  for (const auto& n : names) EXPECT_TRUE(all.count(n)) << n;
  cvx::mark_only_lora_trainable(*root);
  size_t trainable = 0;
  for (const auto& p : root->parameters()) trainable += p.requires_grad();
  EXPECT_EQ(trainable, 6u);
  EXPECT_EQ(cvx::lora_parameters(*root).size(), 6u);
  EXPECT_EQ(cvx::remove_lora(*root), 3u);
  EXPECT_TRUE(cvx::lora_state(*root).empty());
}

// ------------------------------------------------------------------------------------------ files

TEST(LoraFile, DiffusersExportRoundTrip) {
  torch::manual_seed(7);
  auto trained = make_tree();
  cvx::LoraConfig config;
  config.rank = 4;
  config.alpha = 2.0;  // scale 0.5, folded into lora_B on export
  const auto modules = cvx::inject_lora(*trained, config);
  randomize_b(*trained);
  const auto expected = tree_output(*trained);
  const fs::path file = cvx::test::scratch_dir("lora_roundtrip") / "out" / "pytorch_lora_weights.safetensors";
  cvx::save_lora_diffusers(file, *trained);

  // Keys: exactly "transformer." + module + ".lora_A.weight" / ".lora_B.weight".
  std::vector<std::string> want;
  for (const auto& m : modules) {
    want.push_back("transformer." + m + ".lora_A.weight");
    want.push_back("transformer." + m + ".lora_B.weight");
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(file_keys(file), want);

  const auto saved = cvx::SafetensorsFile::open(file);
  const auto layers = layer_map(*trained);
  for (const auto& m : modules) {
    const auto& layer = layers.at(m);
    EXPECT_TRUE(torch::equal(saved->tensor("transformer." + m + ".lora_A.weight"), layer->lora_A->weight)) << m;
    EXPECT_TRUE(torch::equal(saved->tensor("transformer." + m + ".lora_B.weight"), 0.5 * layer->lora_B->weight)) << m;
    EXPECT_EQ(saved->info("transformer." + m + ".lora_B.weight").dtype, "F32");
  }
  const auto metadata = saved->metadata();
  EXPECT_EQ(metadata.at("format"), "pt");
  EXPECT_EQ(metadata.at("cvx.alpha_folded"), "true");
  EXPECT_EQ(metadata.at("cvx.lora_rank"), "4");
  EXPECT_EQ(metadata.at("cvx.lora_alpha"), "2");
  EXPECT_EQ(nlohmann::json::parse(metadata.at("cvx.lora_targets")), nlohmann::json(modules));
  const auto adapter = nlohmann::json::parse(metadata.at("lora_adapter_metadata"));
  EXPECT_EQ(adapter.at("transformer.r"), 4);
  EXPECT_EQ(adapter.at("transformer.lora_alpha"), 4);
  EXPECT_EQ(adapter.at("transformer.target_modules"), nlohmann::json(modules));

  // A fresh model with the same base weights reproduces the trained outputs at the default strength.
  auto fresh = make_tree();
  copy_base(*trained, *fresh);
  const auto report = cvx::load_lora(*fresh, file);
  EXPECT_EQ(report.modules, modules);
  EXPECT_EQ(report.rank, 4);
  EXPECT_DOUBLE_EQ(report.alpha, 4.0);
  EXPECT_DOUBLE_EQ(report.scale, 1.0);
  EXPECT_TRUE(report.alpha_folded);
  EXPECT_EQ(report.metadata.at("cvx.lora_alpha"), "2");
  EXPECT_LT(max_abs_diff(tree_output(*fresh), expected), 1e-6);
  // ... and merged.
  cvx::merge_lora(*fresh);
  EXPECT_LT(max_abs_diff(tree_output(*fresh), expected), 1e-5);
  cvx::unmerge_lora(*fresh);

  // bf16 export.
  const fs::path bf16 = file.parent_path() / "bf16.safetensors";
  cvx::save_lora_diffusers(bf16, *trained, torch::kBFloat16);
  EXPECT_EQ(cvx::SafetensorsFile::open(bf16)->info(want.front()).dtype, "BF16");
  auto from_bf16 = make_tree();
  copy_base(*trained, *from_bf16);
  cvx::load_lora(*from_bf16, bf16);
  EXPECT_LT(max_abs_diff(tree_output(*from_bf16), expected), 0.05);

  // The multiplier scales the strength.
  auto half = make_tree();
  copy_base(*trained, *half);
  EXPECT_DOUBLE_EQ(cvx::load_lora(*half, file, 0.5).scale, 0.5);
  cvx::set_lora_multiplier(*half, 1.0);
  EXPECT_LT(max_abs_diff(tree_output(*half), expected), 1e-6);
}

TEST(LoraFile, UnfoldedStateRoundTrip) {
  torch::manual_seed(8);
  auto trained = make_tree();
  cvx::LoraConfig config;
  config.rank = 4;
  config.alpha = 3.0;
  config.target_modules = {"to_k", "ff.net.0.proj"};
  cvx::inject_lora(*trained, config);
  randomize_b(*trained);
  const fs::path file = cvx::test::scratch_dir("lora_state") / "lora.safetensors";
  cvx::save_lora_state(file, *trained);
  EXPECT_EQ(cvx::SafetensorsFile::open(file)->metadata().at("cvx.alpha_folded"), "false");
  auto fresh = make_tree();
  copy_base(*trained, *fresh);
  const auto report = cvx::load_lora(*fresh, file);
  EXPECT_DOUBLE_EQ(report.alpha, 3.0);
  EXPECT_DOUBLE_EQ(report.scale, 0.75);
  EXPECT_FALSE(report.alpha_folded);
  for (auto& [name, layer] : layer_map(*fresh)) {
    if (!layer->has_lora()) continue;
    EXPECT_TRUE(torch::equal(layer->lora_B->weight, layer_map(*trained).at(name)->lora_B->weight)) << name;
  }
  EXPECT_LT(max_abs_diff(tree_output(*fresh), tree_output(*trained)), 1e-6);
}

TEST(LoraFile, AdapterMetadataAlphaIsUsed) {
  torch::manual_seed(9);
  auto root = make_tree();
  const fs::path file = cvx::test::scratch_dir("lora_meta") / "lora.safetensors";
  const nlohmann::json adapter{{"transformer.r", 2},
                               {"transformer.lora_alpha", 1},
                               {"transformer.alpha_pattern", {{"to_v", 4}}},
                               {"transformer.target_modules", {"to_q", "to_v"}}};
  cvx::save_safetensors(file,
                        {{"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight", torch::randn({2, kDim})},
                         {"transformer.transformer_blocks.0.attn1.to_q.lora_B.weight", torch::randn({kDim, 2})},
                         {"transformer.transformer_blocks.0.attn1.to_v.lora_A.weight", torch::randn({2, kDim})},
                         {"transformer.transformer_blocks.0.attn1.to_v.lora_B.weight", torch::randn({kDim, 2})}},
                        {{"format", "pt"}, {"lora_adapter_metadata", adapter.dump(2)}});
  const auto report = cvx::load_lora(*root, file);
  EXPECT_EQ(report.alpha_source, "lora_adapter_metadata");
  EXPECT_DOUBLE_EQ(report.scale, 0.5);
  EXPECT_DOUBLE_EQ(layer_map(*root).at("transformer_blocks.0.attn1.to_q")->scaling(), 0.5);
  EXPECT_DOUBLE_EQ(layer_map(*root).at("transformer_blocks.0.attn1.to_v")->scaling(), 2.0);
}

TEST(LoraFile, GoldenDiffusersFileLoads) {
  const auto golden = cvx::test::golden_dir();
  if (!golden) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)";
  const fs::path dir = *golden / "lora";
  if (!fs::exists(dir / "meta.json")) GTEST_SKIP() << "no golden lora case";
  const auto meta = cvx::read_json_file(dir / "meta.json");
  const fs::path file = dir / meta.at("lora_file").get<std::string>();
  if (!fs::exists(file)) GTEST_SKIP() << file << " absent";

  // A module tree shaped after the file's keys.
  const auto source = cvx::SafetensorsFile::open(file);
  EXPECT_EQ(source->names(), meta.at("lora_keys").get<std::vector<std::string>>());
  std::map<std::string, std::pair<int64_t, int64_t>> shapes;  // module -> (in, out)
  const std::string prefix = "transformer.";
  for (const auto& key : source->names()) {
    ASSERT_EQ(key.rfind(prefix, 0), 0u) << key;
    const auto& shape = source->info(key).shape;
    const std::string a = ".lora_A.weight", b = ".lora_B.weight";
    if (key.size() > a.size() && key.compare(key.size() - a.size(), a.size(), a) == 0)
      shapes[key.substr(prefix.size(), key.size() - prefix.size() - a.size())].first = shape[1];
    else
      shapes[key.substr(prefix.size(), key.size() - prefix.size() - b.size())].second = shape[0];
  }
  torch::manual_seed(10);
  Node root;
  for (const auto& [module, io] : shapes) root.add(module, io.first, io.second);

  const auto report = cvx::load_lora(root, file);
  const auto& loaded = meta.at("loaded_adapter_config");
  EXPECT_EQ(report.modules, loaded.at("target_modules").get<std::vector<std::string>>());
  EXPECT_EQ(report.rank, loaded.at("r").get<int64_t>());
  EXPECT_DOUBLE_EQ(report.alpha, loaded.at("lora_alpha").get<double>());
  EXPECT_DOUBLE_EQ(report.scale, 1.0);  // no metadata: diffusers' lora_alpha = r
  EXPECT_FALSE(report.alpha_folded);
  EXPECT_EQ(report.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  for (size_t i = 0; i < report.modules.size(); ++i) EXPECT_EQ(report.ranks[i], loaded.at("r").get<int64_t>());

  // W_eff = W + B A exactly as the file says; the trained strength needs multiplier alpha / r.
  const auto layers = layer_map(root);
  const auto x = torch::randn({3, layers.begin()->second->in_features()});
  for (const auto& [name, layer] : layers) {
    const auto a = source->tensor(prefix + name + ".lora_A.weight");
    const auto b = source->tensor(prefix + name + ".lora_B.weight");
    const auto expected = torch::linear(x, layer->weight + torch::matmul(b, a), layer->bias);
    EXPECT_LT(max_abs_diff(layer->forward(x), expected), 1e-5) << name;
  }
  const double trained_scale = meta.at("lora").at("scale_alpha_over_r").get<double>();
  Node again;
  for (const auto& [module, io] : shapes) again.add(module, io.first, io.second);
  EXPECT_DOUBLE_EQ(cvx::load_lora(again, file, trained_scale).scale, trained_scale);
}

TEST(LoraFile, UnprefixedAndLegacyNamesLoad) {
  torch::manual_seed(11);
  const fs::path dir = cvx::test::scratch_dir("lora_names");
  const auto a = torch::randn({3, kDim});
  const auto b = torch::randn({kDim, 3});
  const auto a2 = torch::randn({3, kDim});
  const auto b2 = torch::randn({2 * kDim, 3});

  // No "transformer." prefix (a bare PEFT state dict); text encoder keys are ignored.
  cvx::save_safetensors(dir / "bare.safetensors",
                        {{"transformer_blocks.1.attn1.to_out.0.lora_A.weight", a},
                         {"transformer_blocks.1.attn1.to_out.0.lora_B.weight", b},
                         {"text_encoder.encoder.block.0.q.lora_A.weight", torch::randn({3, 4})},
                         {"text_encoder.encoder.block.0.q.lora_B.weight", torch::randn({4, 3})}});
  auto bare = make_tree();
  const auto report = cvx::load_lora(*bare, dir / "bare.safetensors");
  EXPECT_EQ(report.modules, std::vector<std::string>{"transformer_blocks.1.attn1.to_out.0"});
  EXPECT_EQ(report.ignored_keys.size(), 2u);
  EXPECT_TRUE(torch::equal(layer_map(*bare).at("transformer_blocks.1.attn1.to_out.0")->lora_B->weight, b));

  // Old diffusers attention-processor names.
  cvx::save_safetensors(dir / "legacy.safetensors",
                        {{"transformer.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", a},
                         {"transformer.transformer_blocks.0.attn1.processor.to_q_lora.up.weight", b},
                         {"transformer.transformer_blocks.0.attn1.to_out_lora.down.weight", a},
                         {"transformer.transformer_blocks.0.attn1.to_out_lora.up.weight", b},
                         {"transformer.transformer_blocks.1.ff.net.0.proj.lora.down.weight", a2},
                         {"transformer.transformer_blocks.1.ff.net.0.proj.lora.up.weight", b2},
                         {"text_encoder.whatever.lora_A.weight", torch::randn({1, 1})}});
  auto legacy = make_tree();
  const auto old = cvx::load_lora(*legacy, dir / "legacy.safetensors");
  EXPECT_EQ(old.modules,
            (std::vector<std::string>{"transformer_blocks.0.attn1.to_out.0", "transformer_blocks.0.attn1.to_q",
                                      "transformer_blocks.1.ff.net.0.proj"}));
  EXPECT_DOUBLE_EQ(old.scale, 1.0);
  const auto layers = layer_map(*legacy);
  EXPECT_TRUE(torch::equal(layers.at("transformer_blocks.0.attn1.to_q")->lora_A->weight, a));
  EXPECT_TRUE(torch::equal(layers.at("transformer_blocks.1.ff.net.0.proj")->lora_B->weight, b2));
  EXPECT_FALSE(layers.at("transformer_blocks.0.attn1.to_k")->has_lora());
}

TEST(LoraFile, BadFilesNameTheKey) {
  const fs::path dir = cvx::test::scratch_dir("lora_bad");
  const auto a = torch::randn({2, kDim});
  const auto b = torch::randn({kDim, 2});
  const auto load_error = [&](const std::string& name, const cvx::NamedTensors& tensors) {
    cvx::save_safetensors(dir / name, tensors);
    auto root = make_tree();
    const std::string message = error_of<cvx::FormatError>([&] { cvx::load_lora(*root, dir / name); });
    for (auto& [module, layer] : layer_map(*root)) EXPECT_FALSE(layer->has_lora()) << name << ": " << module;
    EXPECT_NE(message.find(name), std::string::npos) << message;  // names the file
    return message;
  };
  const std::string stray = "transformer.transformer_blocks.0.attn1.to_z.lora_A.weight";
  std::string message =
      load_error("stray.safetensors", {{"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight", a},
                                       {"transformer.transformer_blocks.0.attn1.to_q.lora_B.weight", b},
                                       {stray, a},
                                       {"transformer.transformer_blocks.0.attn1.to_z.lora_B.weight", b}});
  EXPECT_NE(message.find(stray), std::string::npos) << message;

  message = load_error("partner.safetensors", {{"transformer.proj_out.lora_A.weight", a}});
  EXPECT_NE(message.find("transformer.proj_out.lora_A.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("lora_B"), std::string::npos) << message;

  message = load_error("shape.safetensors", {{"transformer.proj_out.lora_A.weight", a},
                                             {"transformer.proj_out.lora_B.weight", b}});  // proj_out is 8 -> 4
  EXPECT_NE(message.find("transformer.proj_out.lora_B.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[8, 2]"), std::string::npos) << message;

  message = load_error("rank.safetensors", {{"transformer.proj_out.lora_A.weight", a},
                                            {"transformer.proj_out.lora_B.weight", torch::randn({4, 3})}});
  EXPECT_NE(message.find("proj_out"), std::string::npos) << message;

  message = load_error("notlora.safetensors", {{"transformer.proj_out.weight", torch::randn({4, kDim})}});
  EXPECT_NE(message.find("transformer.proj_out.weight"), std::string::npos) << message;

  message = load_error("empty.safetensors", {{"text_encoder.q.lora_A.weight", a}});
  EXPECT_NE(message.find("no transformer LoRA weights"), std::string::npos) << message;
}
