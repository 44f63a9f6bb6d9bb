// Sharded checkpoints: the writer's split and index, the index checks of the reader, golden folders.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cvx/core/error.h"
#include "cvx/io/safetensors.h"
#include "safetensors_test_util.h"
#include "test_util.h"

namespace cvx {
namespace {

namespace fs = std::filesystem;
using test::read_bytes;
using test::same_bytes;

// n float32 tensors "t0".."t{n-1}" of `elements` each.
NamedTensors tensors_of(int n, int64_t elements) {
  NamedTensors out;
  for (int i = 0; i < n; ++i) out.emplace_back("t" + std::to_string(i), torch::full({elements}, float(i)));
  return out;
}

std::vector<std::string> file_names(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const fs::path& p : paths) out.push_back(p.filename().string());
  return out;
}

TEST(ShardedSafetensors, SplitsGreedilyAndWritesTheIndex) {
  const fs::path dir = test::scratch_dir("sharded_write");
  const NamedTensors tensors = tensors_of(5, 10);  // 40 bytes each
  const ShardedWriteResult result = save_safetensors_sharded(dir, "model", tensors, 100, {{"format", "pt"}});
  EXPECT_EQ(file_names(result.files),
            (std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                      "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(result.index, dir / "model.safetensors.index.json");
  EXPECT_EQ(read_bytes(result.index),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 200\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"t0\": \"model-00001-of-00003.safetensors\",\n"
            "    \"t1\": \"model-00001-of-00003.safetensors\",\n"
            "    \"t2\": \"model-00002-of-00003.safetensors\",\n"
            "    \"t3\": \"model-00002-of-00003.safetensors\",\n"
            "    \"t4\": \"model-00003-of-00003.safetensors\"\n"
            "  }\n"
            "}\n");

  const auto sharded = ShardedSafetensors::open(result.index);
  EXPECT_EQ(sharded->names(), (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"}));
  EXPECT_EQ(sharded->shards().size(), 3u);
  EXPECT_EQ(sharded->shard_of("t3").path().filename(), "model-00002-of-00003.safetensors");
  for (const auto& [name, tensor] : tensors) {
    EXPECT_TRUE(same_bytes(sharded->tensor(name), tensor)) << name;
    EXPECT_EQ(sharded->info(name).shape, std::vector<int64_t>{10});
  }
  EXPECT_EQ(sharded->metadata().at("total_size"), "200");
  EXPECT_EQ(sharded->metadata().at("format"), "pt");
  EXPECT_FALSE(sharded->contains("t5"));
  EXPECT_THROW(sharded->tensor("t5"), FormatError);
}

TEST(ShardedSafetensors, OversizedTensorsGetAShardOfTheirOwnAsHuggingfaceHubDoes) {
  const fs::path dir = test::scratch_dir("sharded_oversized");
  // 40, 400, 40 bytes with a 100-byte limit: the big one is its own shard, emitted as soon as it is
  // seen, while t0 and t2 keep filling the current one.
  const NamedTensors tensors = {{"t0", torch::zeros({10})}, {"big", torch::zeros({100})}, {"t2", torch::zeros({10})}};
  const ShardedWriteResult result = save_safetensors_sharded(dir, "m", tensors, 100);
  ASSERT_EQ(result.files.size(), 2u);
  const auto sharded = ShardedSafetensors::open(result.index);
  EXPECT_EQ(sharded->shard_of("big").path().filename(), "m-00001-of-00002.safetensors");
  EXPECT_EQ(sharded->shard_of("t0").path().filename(), "m-00002-of-00002.safetensors");
  EXPECT_EQ(sharded->shard_of("t2").path().filename(), "m-00002-of-00002.safetensors");
}

TEST(ShardedSafetensors, WritesOneFileWhenEverythingFitsAndRemovesStaleShards) {
  const fs::path dir = test::scratch_dir("sharded_single");
  save_safetensors_sharded(dir, "model", tensors_of(5, 10), 100);
  test::write_bytes(dir / "other-00001-of-00002.safetensors", "not ours");
  const ShardedWriteResult result = save_safetensors_sharded(dir, "model", tensors_of(3, 10), 1000);
  EXPECT_EQ(file_names(result.files), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(result.index.empty());
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"model.safetensors", "other-00001-of-00002.safetensors"}));
  const auto source = open_tensor_source(dir / "model.safetensors");
  EXPECT_EQ(source->names().size(), 3u);

  // And back to shards: the single file goes once the index is in place.
  save_safetensors_sharded(dir, "model", tensors_of(3, 10), 50);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_EQ(open_tensor_source(dir / "model.safetensors.index.json")->names().size(), 3u);
}

// Writes an index (and shards holding the given tensors) for the index-check tests.
fs::path make_checkpoint(const fs::path& dir, const std::map<std::string, std::vector<std::string>>& shards,
                         const std::string& index_text) {
  for (const auto& [file, names] : shards) {
    NamedTensors tensors;
    for (const std::string& name : names) tensors.emplace_back(name, torch::ones({2}));
    save_safetensors(dir / file, tensors);
  }
  test::write_bytes(dir / "ckpt.safetensors.index.json", index_text);
  return dir / "ckpt.safetensors.index.json";
}

TEST(ShardedSafetensors, IndexErrorsNameTheIndexAndTheCulprit) {
  const std::map<std::string, std::vector<std::string>> two_shards = {{"a.safetensors", {"x", "y"}},
                                                                      {"b.safetensors", {"z"}}};
  struct Case {
    std::string label;
    std::map<std::string, std::vector<std::string>> shards;
    std::string index;
    std::vector<std::string> expected;  // parts of the message
  };
  const std::vector<Case> cases = {
      {"malformed JSON", two_shards, R"({"weight_map": {)", {"not valid JSON"}},
      {"not an object", two_shards, "[]", {"not a JSON object"}},
      {"no weight map", two_shards, R"({"metadata": {}})", {"no \"weight_map\""}},
      {"metadata not an object",
       two_shards,
       R"({"metadata": 5, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}})",
       {"\"metadata\" is 5"}},
      {"file name not a string", two_shards, R"({"weight_map": {"x": 1}})", {"\"x\"", "not a file name"}},
      {"path escaping the folder",
       two_shards,
       R"({"weight_map": {"x": "../a.safetensors"}})",
       {"\"x\"", "../a.safetensors"}},
      {"missing shard",
       two_shards,
       R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "c.safetensors"}})",
       {"\"c.safetensors\"", "does not exist"}},
      {"tensor mapped to the wrong shard",
       two_shards,
       R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"}})",
       {"\"y\"", "\"b.safetensors\"", "does not contain it", "(it is in \"a.safetensors\")"}},
      {"tensor in no shard",
       two_shards,
       R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors", "w": "b.safetensors"}})",
       {"\"w\"", "does not contain it"}},
      {"tensor missing from the map",
       two_shards,
       R"({"weight_map": {"x": "a.safetensors", "z": "b.safetensors"}})",
       {"\"y\"", "\"a.safetensors\"", "missing from the weight map"}},
      {"tensor in two shards",
       {{"a.safetensors", {"x"}}, {"b.safetensors", {"x", "w"}}},
       R"({"weight_map": {"x": "a.safetensors", "w": "b.safetensors"}})",
       {"\"x\"", "two shards", "\"a.safetensors\"", "\"b.safetensors\""}},
      {"broken shard",
       two_shards,
       R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "q": "q.safetensors"}})",
       {"\"q.safetensors\"", "the file is empty"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const fs::path dir = test::scratch_dir("sharded_bad");
    const fs::path index = make_checkpoint(dir, c.shards, c.index);
    test::write_bytes(dir / "q.safetensors", "");
    try {
      ShardedSafetensors::open(index);
      ADD_FAILURE() << "accepted";
    } catch (const FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(index.string()), std::string::npos) << what;
      for (const std::string& part : c.expected)
        EXPECT_NE(what.find(part), std::string::npos) << part << " in " << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
}

TEST(ShardedSafetensors, GoldenFoldersOpenAndRewriteByteForByte) {
  const auto golden = test::golden_dir();
  if (!golden) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)";
  const auto indexes = test::files_ending_with(*golden, ".safetensors.index.json");
  ASSERT_FALSE(indexes.empty()) << "no sharded checkpoint under " << *golden;
  for (const fs::path& index_path : indexes) {
    SCOPED_TRACE(index_path.string());
    const auto index = nlohmann::json::parse(read_bytes(index_path));
    const auto& weight_map = index.at("weight_map");
    const std::shared_ptr<TensorSource> source = open_tensor_source(index_path);
    const auto* sharded = dynamic_cast<const ShardedSafetensors*>(source.get());
    ASSERT_NE(sharded, nullptr);
    ASSERT_EQ(source->names().size(), weight_map.size());

    // The shards' tensors in shard order, each shard's largest first, with the largest shard as the
    // limit: every shard fits, and (for these folders) the next shard's first tensor overflows it, so
    // the greedy split is the original one and every file, the index included, must come out identical.
    NamedTensors tensors;
    uint64_t largest = 0;
    for (const auto& shard : sharded->shards()) {
      std::vector<TensorInfo> infos = shard->header().tensors;
      std::stable_sort(infos.begin(), infos.end(),
                       [](const TensorInfo& a, const TensorInfo& b) { return a.num_bytes() > b.num_bytes(); });
      uint64_t bytes = 0;
      for (const TensorInfo& info : infos) {
        EXPECT_EQ(weight_map.at(info.name).get<std::string>(), shard->path().filename().string()) << info.name;
        tensors.emplace_back(info.name, shard->tensor(info.name));
        bytes += info.num_bytes();
      }
      largest = std::max(largest, bytes);
    }
    EXPECT_EQ(source->metadata().at("total_size"),
              std::to_string(index.at("metadata").at("total_size").get<uint64_t>()));
    const std::string index_name = index_path.filename().string();
    const std::string base = index_name.substr(0, index_name.size() - std::string(".safetensors.index.json").size());
    const fs::path out = test::scratch_dir("sharded_golden");
    const ShardedWriteResult result =
        save_safetensors_sharded(out, base, tensors, largest, sharded->shards().front()->metadata());
    ASSERT_EQ(result.files.size(), sharded->shards().size());
    for (size_t k = 0; k < result.files.size(); ++k) {
      EXPECT_EQ(result.files[k].filename(), sharded->shards()[k]->path().filename());
      EXPECT_TRUE(read_bytes(result.files[k]) == read_bytes(sharded->shards()[k]->path())) << result.files[k];
    }
    EXPECT_EQ(read_bytes(result.index), read_bytes(index_path));
  }
}

}  // namespace
}  // namespace cvx
