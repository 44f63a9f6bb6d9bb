// Streaming safetensors writers: files byte-identical to save_safetensors(_sharded) whatever order
// and pieces the tensors arrive in, and every misuse refused without touching the destination.
#include "cvx/io/safetensors_stream_writer.h"

#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "safetensors_test_util.h"
#include "test_util.h"

namespace cvx {
namespace {

namespace fs = std::filesystem;
using test::read_bytes;

std::vector<TensorDecl> decls_of(const NamedTensors& tensors) {
  std::vector<TensorDecl> out;
  for (const auto& [name, t] : tensors) out.push_back({name, t.scalar_type(), t.sizes().vec()});
  return out;
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.push_back(entry.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Substring checks on the message of the cvx::Error that f throws.
void expect_error_mentions(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const std::string& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

NamedTensors mixed_tensors() {
  return {
      {"w", torch::randn({4, 6})},
      {"ids", torch::arange(5, torch::kInt64)},
      {"half", torch::randn({3, 2}).to(torch::kBFloat16)},
      {"f16", torch::randn({7}).to(torch::kFloat16)},
      {"flags", torch::tensor({true, false, true})},
      {"bytes", torch::tensor({1, 2, 3}, torch::kUInt8)},
      {"empty", torch::empty({0, 3})},
      {"scalar", torch::tensor(2.5, torch::kFloat64)},
      {"strided", torch::arange(24, torch::kInt32).reshape({4, 6}).t()},
  };
}

TEST(SafetensorsStreamWriter, ReverseOrderAndPiecesGiveTheFileOfSaveSafetensors) {
  const fs::path dir = test::scratch_dir("stream_identical");
  const NamedTensors tensors = mixed_tensors();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"cvx.step", "12"}};
  save_safetensors(dir / "reference.safetensors", tensors, metadata);

  SafetensorsStreamWriter writer(dir / "streamed.safetensors", decls_of(tensors), metadata);
  for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
    if (it->first == "w") continue;
    writer.write(it->first, it->second);
  }
  // "w" (24 elements) in three parts, last first, each with its own shape, one with transposed strides.
  const torch::Tensor flat = tensors[0].second.reshape({-1});
  writer.write_part("w", 16, flat.slice(0, 16, 24).reshape({2, 4}));
  writer.write_part("w", 0, flat.slice(0, 0, 8).reshape({2, 4}).t().contiguous().t());
  writer.write_part("w", 8, flat.slice(0, 8, 8));  // an empty part writes nothing
  expect_error_mentions([&] { writer.finish(); }, {"\"w\"", "16 of 24", "element 8"});
  writer.write_part("w", 8, flat.slice(0, 8, 16));
  writer.finish();

  const std::string expected = read_bytes(dir / "reference.safetensors");
  const std::string streamed = read_bytes(dir / "streamed.safetensors");
  EXPECT_TRUE(streamed == expected) << "differs from byte " << test::first_difference(streamed, expected) << " (sizes "
                                    << streamed.size() << " vs " << expected.size() << ")";
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"reference.safetensors", "streamed.safetensors"}));
}

TEST(ShardedSafetensorsStreamWriter, GivesTheFilesAndIndexOfSaveSafetensorsSharded) {
  // 40, 400 (above the limit: a shard of its own), 40, 80, 8 and 0 bytes with a 100-byte limit.
  const NamedTensors tensors = {{"t0", torch::randn({10})},
                                {"big", torch::randn({100})},
                                {"t2", torch::arange(10, torch::kInt32)},
                                {"t3", torch::randn({10}, torch::kFloat64)},
                                {"t4", torch::randn({4}).to(torch::kBFloat16)},
                                {"t5", torch::empty({0})}};
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  for (const uint64_t limit : {uint64_t{100}, uint64_t{1} << 20}) {
    SCOPED_TRACE(::testing::Message() << "max_shard_bytes " << limit);
    const fs::path ref = test::scratch_dir("stream_sharded_ref");
    const fs::path out = test::scratch_dir("stream_sharded_out");
    const ShardedWriteResult expected = save_safetensors_sharded(ref, "model", tensors, limit, metadata);

    ShardedSafetensorsStreamWriter writer(out, "model", decls_of(tensors), limit, metadata);
    for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
      if (it->first == "big") continue;
      writer.write(it->first, it->second);
    }
    writer.write_part("big", 50, tensors[1].second.slice(0, 50, 100));
    writer.write_part("big", 0, tensors[1].second.slice(0, 0, 50));
    const ShardedWriteResult result = writer.finish();

    ASSERT_EQ(result.files.size(), expected.files.size());
    EXPECT_EQ(result.index.empty(), expected.index.empty());
    EXPECT_EQ(listing(out), listing(ref));
    for (const std::string& name : listing(ref)) EXPECT_TRUE(read_bytes(out / name) == read_bytes(ref / name)) << name;
    for (size_t k = 0; k < result.files.size(); ++k) {
      EXPECT_EQ(result.files[k].filename(), expected.files[k].filename());
    }
  }
}

TEST(ShardedSafetensorsStreamWriter, ReplacesAnEarlierShardedSaveAndRemovesItsStaleFiles) {
  const fs::path dir = test::scratch_dir("stream_sharded_stale");
  save_safetensors_sharded(dir, "m", {{"a", torch::ones({10})}, {"b", torch::ones({10})}, {"c", torch::ones({10})}},
                           40);
  ASSERT_EQ(listing(dir).size(), 4u);  // three shards and the index
  ShardedSafetensorsStreamWriter writer(dir, "m", {{"a", torch::kFloat32, {10}}}, 1000);
  EXPECT_EQ(writer.planned().files, std::vector<fs::path>{dir / "m.safetensors"});
  writer.write("a", torch::zeros({10}));
  writer.finish();
  EXPECT_EQ(listing(dir), std::vector<std::string>{"m.safetensors"});
}

TEST(SafetensorsStreamWriter, MisuseIsRefusedNamingTheTensorAndFinishLeavesTheTargetAlone) {
  const fs::path dir = test::scratch_dir("stream_errors");
  const fs::path path = dir / "model.safetensors";
  save_safetensors(path, {{"old", torch::ones({2})}});
  const std::string before = read_bytes(path);
  const std::vector<TensorDecl> decls = {{"w", torch::kFloat32, {2, 3}}, {"b", torch::kBFloat16, {4}}};
  {
    SafetensorsStreamWriter writer(path, decls);
    expect_error_mentions(
        [&] {
          writer.write("v", torch::zeros({2, 3}));
        },
        {"model.safetensors", "\"v\"", "not declared"});
    expect_error_mentions(
        [&] {
          writer.write("w", torch::zeros({2, 3}, torch::kFloat64));
        },
        {"\"w\"", "declared Float", "given Double"});
    expect_error_mentions([&] { writer.write("w", torch::zeros({3, 2})); }, {"\"w\"", "[2, 3]", "[3, 2]"});
    expect_error_mentions([&] { writer.write_part("w", 4, torch::zeros({3})); }, {"\"w\"", "[4, 7)", "6 elements"});
    expect_error_mentions([&] { writer.write_part("w", -1, torch::zeros({1})); }, {"\"w\"", "[-1, 0)"});
    writer.write_part("w", 1, torch::zeros({3}));
    expect_error_mentions([&] { writer.write_part("w", 3, torch::zeros({2})); },
                          {"\"w\"", "[3, 5)", "overlap", "[3, 4)"});
    expect_error_mentions([&] { writer.write_part("w", 0, torch::zeros({2})); }, {"overlap", "[1, 2)"});
    expect_error_mentions([&] { writer.write("w", torch::zeros({2, 3})); }, {"overlap"});
    writer.write_part("w", 0, torch::zeros({1}));
    // "w" misses element 4..5 and "b" all of it: the first in declaration order is named.
    expect_error_mentions([&] { writer.finish(); },
                          {"model.safetensors", "\"w\"", "4 of 6", "element 4", "2 of 2 tensors"});
    EXPECT_EQ(read_bytes(path), before);
    EXPECT_EQ(listing(dir).size(), 2u);  // the target and the temporary file
  }
  // Destroyed unfinished: the temporary file is gone and the target is as it was.
  EXPECT_EQ(listing(dir), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(read_bytes(path), before);

  const auto declare = [&](const std::vector<TensorDecl>& bad) { SafetensorsStreamWriter w(path, bad); };
  expect_error_mentions(
      [&] {
        declare({{"w", torch::kFloat32, {1}}, {"w", torch::kInt8, {1}}});
      },
      {"model.safetensors", "\"w\"", "twice"});
  expect_error_mentions([&] { declare({{"c", torch::kComplexFloat, {1}}}); }, {"\"c\""});
  expect_error_mentions([&] { declare({{"n", torch::kFloat32, {2, -1}}}); }, {"\"n\"", "negative"});
  expect_error_mentions([&] { declare({{"__metadata__", torch::kFloat32, {1}}}); }, {"reserved"});
  EXPECT_EQ(listing(dir), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(read_bytes(path), before);

  // A tensor that fails only while it is read (meta device): nothing recorded, the writer usable.
  SafetensorsStreamWriter writer(path, {{"w", torch::kFloat32, {2}}});
  EXPECT_THROW(writer.write("w", torch::empty({2}, torch::Device(torch::kMeta))), Error);
  writer.write("w", torch::full({2}, 3.0f));
  writer.finish();
  EXPECT_THROW(writer.write("w", torch::zeros({2})), Error);
  EXPECT_THROW(writer.finish(), Error);
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path)->tensor("w"), torch::full({2}, 3.0f)));
}

TEST(ShardedSafetensorsStreamWriter, AMissingTensorRenamesNoShard) {
  const fs::path dir = test::scratch_dir("stream_sharded_missing");
  {
    ShardedSafetensorsStreamWriter writer(dir, "m", {{"a", torch::kFloat32, {10}}, {"b", torch::kFloat32, {10}}}, 40);
    ASSERT_EQ(writer.planned().files.size(), 2u);
    writer.write("a", torch::ones({10}));
    expect_error_mentions([&] { writer.write("c", torch::ones({10})); }, {"\"c\"", "not declared"});
    expect_error_mentions([&] { writer.finish(); }, {"m-00002-of-00002.safetensors", "\"b\"", "0 of 10"});
    EXPECT_EQ(listing(dir).size(), 2u);  // two temporary files, no shard in place
    for (const std::string& name : listing(dir)) EXPECT_EQ(name.rfind(".m-0000", 0), 0u) << name;
  }
  EXPECT_TRUE(listing(dir).empty());
}

}  // namespace
}  // namespace cvx
