#include "cvx/io/model_folder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {
struct TinyNet : torch::nn::Module {
  TinyNet(int64_t in = 4, int64_t out = 3) {
    proj = register_module("proj", torch::nn::Linear(in, out));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})));
    scale = register_buffer("scale", torch::arange(out, torch::kFloat32));
  }
  torch::nn::Linear proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::Tensor scale;
};

std::string load_error(torch::nn::Module& m, const cvx::TensorSource& source) {
  try {
    cvx::load_state(m, source);
  } catch (const cvx::FormatError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(ModelFolder, SaveAndLoadStrictRoundTrip) {
  torch::manual_seed(0);
  TinyNet a, b;
  const fs::path dir = cvx::test::scratch_dir("model_folder") / "transformer";
  cvx::save_component(dir, {{"_class_name", "TinyNet"}, {"width", 3}}, cvx::module_state(a));
  const auto component = cvx::open_component(dir, "", true);
  EXPECT_EQ(component.class_name(), "TinyNet");
  EXPECT_EQ(component.config["width"], 3);
  const auto report = cvx::load_state(b, *component.weights);
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.num_loaded, 5u);  // proj weight+bias, norm weight+bias, the scale buffer
  for (const auto& [name, tensor] : cvx::module_state(a)) {
    bool found = false;
    for (const auto& [other, t] : cvx::module_state(b)) {
      if (other == name) {
        EXPECT_TRUE(torch::equal(t, tensor)) << name;
        found = true;
      }
    }
    EXPECT_TRUE(found) << name;
  }
}

TEST(ModelFolder, MismatchesAreReportedTogether) {
  TinyNet saved(4, 3);
  auto state = cvx::module_state(saved);
  state.erase(state.begin());  // drop proj.weight
  state.emplace_back("extra.weight", torch::zeros({2}));
  const fs::path dir = cvx::test::scratch_dir("model_folder_mismatch") / "transformer";
  cvx::save_component(dir, {{"_class_name", "TinyNet"}}, state);
  const auto component = cvx::open_component(dir);
  TinyNet wider(4, 5);  // every 3-wide tensor now mismatches
  const std::string message = load_error(wider, *component.weights);
  EXPECT_NE(message.find("1 missing from the file: proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("1 unexpected in the file: extra.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("proj.bias: file [3] vs model [5]"), std::string::npos) << message;
  EXPECT_NE(message.find(component.weights->description()), std::string::npos) << message;
  // Non-strict: the report carries the same, the matching tensors are loaded.
  TinyNet same(4, 3);
  cvx::LoadOptions lenient;
  lenient.strict = false;
  const auto report = cvx::load_state(same, *component.weights, lenient);
  EXPECT_EQ(report.missing, std::vector<std::string>{"proj.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.weight"});
}

TEST(ModelFolder, DtypeConversionOnLoad) {
  TinyNet a;
  const fs::path dir = cvx::test::scratch_dir("model_folder_dtype") / "vae";
  cvx::save_component(dir, {{"_class_name", "TinyNet"}}, cvx::module_state(a));
  for (auto dtype : {torch::kBFloat16, torch::kFloat16, torch::kFloat32}) {
    TinyNet b;
    cvx::LoadOptions options;
    options.dtype = dtype;
    cvx::load_state(b, *cvx::open_component(dir).weights, options);
    EXPECT_EQ(b.proj->weight.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(b.proj->weight, a.proj->weight.to(dtype)));
  }
}

TEST(ModelFolder, ShardedSaveAndPrefix) {
  TinyNet a;
  const fs::path dir = cvx::test::scratch_dir("model_folder_sharded") / "text_encoder";
  cvx::SaveOptions options;
  options.weights_base = "model";
  options.max_shard_bytes = 40;  // forces several shards
  auto state = cvx::module_state(a);
  for (auto& item : state) item.first = "encoder." + item.first;
  cvx::save_component(dir, {{"architectures", {"TinyEncoder"}}}, state, options);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  const auto component = cvx::open_component(dir);
  EXPECT_EQ(component.class_name(), "TinyEncoder");
  TinyNet b;
  cvx::LoadOptions load;
  load.prefix = "encoder.";
  EXPECT_TRUE(cvx::load_state(b, *component.weights, load).ok());
  EXPECT_TRUE(torch::equal(b.proj->weight, a.proj->weight));
}

TEST(ModelFolder, SaveReplacesAnExistingFolderWhole) {
  const fs::path dir = cvx::test::scratch_dir("model_folder_replace") / "transformer";
  TinyNet a;
  cvx::save_component(dir, {{"_class_name", "A"}}, cvx::module_state(a));
  std::ofstream(dir / "stale.txt") << "old";
  cvx::save_component(dir, {{"_class_name", "B"}}, cvx::module_state(a));
  EXPECT_FALSE(fs::exists(dir / "stale.txt"));
  EXPECT_EQ(cvx::read_json_file(dir / "config.json")["_class_name"], "B");
  for (const auto& entry : fs::directory_iterator(dir.parent_path()))
    EXPECT_EQ(entry.path().filename(), "transformer") << "leftover " << entry.path();
}

TEST(ModelFolder, BinOnlyAndMissingAreClearErrors) {
  const fs::path dir = cvx::test::scratch_dir("model_folder_bin") / "transformer";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{\"_class_name\": \"X\"}";
  EXPECT_FALSE(cvx::open_component(dir).weights);
  EXPECT_THROW(cvx::open_component(dir, "", true), cvx::ConfigError);
  std::ofstream(dir / "diffusion_pytorch_model.bin") << "x";
  try {
    cvx::open_component(dir);
    FAIL();
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cvx::ModelFolder::open(dir), cvx::ConfigError);
  std::ofstream(dir / "broken.json") << "{\"a\": ";
  try {
    cvx::read_json_file(dir / "broken.json");
    FAIL();
  } catch (const cvx::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json is not valid JSON"), std::string::npos) << e.what();
  }
}

// Every pipeline folder of the golden set (any folder with model_index.json) opens, and every
// component's weights are readable with the dtypes and shapes the files declare.
TEST(ModelFolder, GoldenPipelineFoldersOpen) {
  const auto golden = cvx::test::golden_dir();
  if (!golden) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)";
  size_t pipelines = 0;
  for (const auto& entry : fs::recursive_directory_iterator(*golden)) {
    if (entry.path().filename() != "model_index.json") continue;
    const auto folder = cvx::ModelFolder::open(entry.path().parent_path());
    EXPECT_FALSE(folder.component_names().empty()) << entry.path();
    for (const auto& name : folder.component_names()) {
      const auto component = folder.component(name);
      if (!component.weights) continue;
      for (const auto& tensor_name : component.weights->names()) {
        const auto t = component.weights->tensor(tensor_name);
        EXPECT_EQ(t.sizes(), c10::IntArrayRef(component.weights->info(tensor_name).shape)) << tensor_name;
      }
    }
    ++pipelines;
  }
  EXPECT_GT(pipelines, 0u) << "no model_index.json under " << *golden;
}
