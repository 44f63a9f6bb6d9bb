// safetensors reader and writer: golden files from the reference library, zero-copy views, layout,
// atomic writes.
#include "cvx/io/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "cvx/core/error.h"
#include "safetensors_test_util.h"
#include "test_util.h"

namespace cvx {
namespace {

namespace fs = std::filesystem;
using test::read_bytes;
using test::same_bytes;

// Kept apart from the implementation's table so the golden check does not grade itself.
torch::ScalarType expected_type(const std::string& dtype) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"BOOL", torch::kBool},   {"U8", torch::kUInt8},   {"I8", torch::kInt8},     {"I16", torch::kInt16},
      {"I32", torch::kInt32},   {"I64", torch::kInt64},  {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"F32", torch::kFloat32}, {"F64", torch::kFloat64}};
  return types.at(dtype);
}

uint64_t read_le64(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

// Names of the files under `dir`, to spot stray temporary files.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.push_back(entry.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SafetensorsGolden, EveryFileMatchesItsHeaderAndRewritesByteForByte) {
  const auto golden = test::golden_dir();
  if (!golden) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)";
  const auto files = test::files_ending_with(*golden, ".safetensors");
  ASSERT_FALSE(files.empty()) << "no .safetensors files under " << *golden;
  const fs::path scratch = test::scratch_dir("safetensors_golden");
  for (const fs::path& path : files) {
    SCOPED_TRACE(path.string());
    const std::string bytes = read_bytes(path);
    const uint64_t n = read_le64(bytes);
    const auto header = nlohmann::json::parse(bytes.substr(8, n));
    const char* data = bytes.data() + 8 + n;

    const auto file = SafetensorsFile::open(path);
    size_t tensors = 0;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        EXPECT_EQ(file->metadata(), (entry.get<std::map<std::string, std::string>>()));
        continue;
      }
      SCOPED_TRACE(name);
      ++tensors;
      const TensorInfo& info = file->info(name);
      EXPECT_EQ(info.dtype, entry.at("dtype").get<std::string>());
      EXPECT_EQ(info.shape, entry.at("shape").get<std::vector<int64_t>>());
      const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      const torch::Tensor t = file->tensor(name);
      EXPECT_EQ(t.scalar_type(), expected_type(info.dtype));
      EXPECT_EQ(t.sizes().vec(), info.shape);
      ASSERT_EQ(t.nbytes(), offsets[1] - offsets[0]);
      EXPECT_EQ(t.nbytes() == 0 || std::memcmp(t.data_ptr(), data + offsets[0], t.nbytes()) == 0, true);
    }
    EXPECT_EQ(file->names().size(), tensors);

    // names() is sorted, not the file's order: the writer must restore the reference layout itself.
    NamedTensors all;
    for (const std::string& name : file->names()) all.emplace_back(name, file->tensor(name));
    const fs::path copy = scratch / "copy.safetensors";
    save_safetensors(copy, all, file->metadata());
    const std::string written = read_bytes(copy);
    EXPECT_TRUE(written == bytes) << "rewritten file differs from byte " << test::first_difference(written, bytes)
                                  << " (sizes " << written.size() << " vs " << bytes.size() << ")";
    const auto again = SafetensorsFile::open(copy);
    ASSERT_EQ(again->names(), file->names());
    for (const auto& [name, tensor] : all) EXPECT_TRUE(same_bytes(again->tensor(name), tensor)) << name;
  }
}

TEST(SafetensorsWriter, LayoutMatchesTheReferenceLibrary) {
  const fs::path path = test::scratch_dir("safetensors_layout") / "x.safetensors";
  const NamedTensors tensors = {
      {"b", torch::arange(6, torch::kFloat32).reshape({2, 3})},
      {"a", torch::tensor({1, 2}, torch::kInt64)},
      {"c", torch::tensor({7, 8, 9}, torch::kUInt8)},
      {"s", torch::tensor(0.5, torch::kFloat64)},
      {"h", torch::ones({1}, torch::kBFloat16)},
      {"z", torch::empty({0}, torch::kFloat32)},
  };
  save_safetensors(path, tensors, {{"format", "pt"}, {"a", "1"}});
  const std::string bytes = read_bytes(path);
  const std::string expected_json = R"({"__metadata__":{"a":"1","format":"pt"},)"
                                    R"("a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                                    R"("s":{"dtype":"F64","shape":[],"data_offsets":[16,24]},)"
                                    R"("b":{"dtype":"F32","shape":[2,3],"data_offsets":[24,48]},)"
                                    R"("z":{"dtype":"F32","shape":[0],"data_offsets":[48,48]},)"
                                    R"("h":{"dtype":"BF16","shape":[1],"data_offsets":[48,50]},)"
                                    R"("c":{"dtype":"U8","shape":[3],"data_offsets":[50,53]}})";
  const uint64_t n = read_le64(bytes);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(n, expected_json.size() + (8 - expected_json.size() % 8) % 8);
  EXPECT_EQ(bytes.substr(8, n), expected_json + std::string(n - expected_json.size(), ' '));
  EXPECT_EQ(bytes.size(), 8 + n + 53);
  EXPECT_EQ(bytes.substr(8 + n + 50), "\x07\x08\x09");

  const auto file = SafetensorsFile::open(path);
  for (const auto& [name, tensor] : tensors) EXPECT_TRUE(same_bytes(file->tensor(name), tensor)) << name;
  EXPECT_EQ(file->tensor("s").dim(), 0);
  EXPECT_EQ(file->tensor("s").item<double>(), 0.5);
}

TEST(SafetensorsWriter, OrdersNamesBytewiseAndOmitsEmptyMetadata) {
  const fs::path path = test::scratch_dir("safetensors_order") / "x.safetensors";
  save_safetensors(path, {{"\xc3\xa9", torch::zeros({1})}, {"a", torch::zeros({1})}, {"B", torch::zeros({1})}});
  const std::string bytes = read_bytes(path);
  const std::string header = bytes.substr(8, read_le64(bytes));
  EXPECT_EQ(header.rfind(R"({"B":)", 0), 0u) << header;
  EXPECT_LT(header.find(R"("a":)"), header.find("\"\xc3\xa9\":"));
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
}

TEST(SafetensorsWriter, EveryDtypeRoundTripsBitwise) {
  const fs::path dir = test::scratch_dir("safetensors_dtypes");
  NamedTensors tensors;
  for (const auto type : {torch::kBool, torch::kUInt8, torch::kInt8, torch::kInt16, torch::kInt32, torch::kInt64,
                          torch::kFloat16, torch::kBFloat16, torch::kFloat32, torch::kFloat64}) {
    torch::Tensor t = torch::rand({3, 5}).mul(100).to(type);
    if (t.is_floating_point()) t[0][0] = std::numeric_limits<double>::quiet_NaN();
    tensors.emplace_back(std::string(c10::toString(type)), t);
  }
  save_safetensors(dir / "all.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir / "all.safetensors");
  for (const auto& [name, tensor] : tensors) {
    const torch::Tensor back = file->tensor(name);
    EXPECT_EQ(file->info(name).dtype, torch_dtype_to_safetensors(tensor.scalar_type()));
    EXPECT_TRUE(same_bytes(back, tensor)) << name;
  }
}

TEST(SafetensorsWriter, WritesStridedTensorsAsTheirValues) {
  const fs::path dir = test::scratch_dir("safetensors_strided");
  const torch::Tensor base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  // Large enough to be copied in several row blocks.
  const torch::Tensor big = torch::randn({2000, 3000}).t();
  const NamedTensors tensors = {
      {"transposed", base.t()},
      {"stepped", base.slice(1, 0, 6, 2)},
      {"expanded", torch::arange(3, torch::kInt64).expand({4, 3})},
      {"negated_view", torch::_neg_view(base)},
      {"scalar_view", base[1][2]},
      {"big", big},
  };
  save_safetensors(dir / "x.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir / "x.safetensors");
  for (const auto& [name, tensor] : tensors) EXPECT_TRUE(same_bytes(file->tensor(name), tensor.resolve_neg())) << name;
  EXPECT_TRUE(torch::equal(file->tensor("negated_view"), -base));
}

TEST(SafetensorsWriter, EmptyListsRoundTrip) {
  const fs::path dir = test::scratch_dir("safetensors_empty");
  save_safetensors(dir / "none.safetensors", {});
  EXPECT_EQ(read_bytes(dir / "none.safetensors"), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  save_safetensors(dir / "meta.safetensors", {}, {{"format", "pt"}});
  const auto file = SafetensorsFile::open(dir / "meta.safetensors");
  EXPECT_TRUE(file->names().empty());
  EXPECT_EQ(file->metadata().at("format"), "pt");
}

TEST(SafetensorsWriter, RejectsBadInputWithoutTouchingTheTarget) {
  const fs::path dir = test::scratch_dir("safetensors_atomic");
  const fs::path path = dir / "model.safetensors";
  save_safetensors(path, {{"w", torch::ones({2})}});
  const std::string before = read_bytes(path);

  const std::vector<std::pair<std::string, NamedTensors>> bad = {
      {"complex", {{"w", torch::ones({2})}, {"c", torch::ones({2}, torch::kComplexFloat)}}},
      {"duplicate", {{"w", torch::ones({2})}, {"w", torch::ones({2})}}},
      {"reserved name", {{"__metadata__", torch::ones({2})}}},
      {"undefined", {{"u", torch::Tensor()}}},
      {"sparse", {{"s", torch::eye(2).to_sparse()}}},
      {"invalid UTF-8 name", {{"\xff", torch::ones({2})}}},
      // Fails only while the data is written, after the temporary file exists.
      {"meta device", {{"w", torch::ones({2})}, {"m", torch::empty({2}, torch::Device(torch::kMeta))}}},
  };
  for (const auto& [label, tensors] : bad) {
    SCOPED_TRACE(label);
    try {
      save_safetensors(path, tensors);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
    EXPECT_EQ(listing(dir), std::vector<std::string>{"model.safetensors"});
    EXPECT_EQ(read_bytes(path), before);
  }

  EXPECT_THROW(save_safetensors(dir / "missing" / "x.safetensors", {{"w", torch::ones({2})}}), SystemError);
  EXPECT_EQ(listing(dir), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsReader, AlignedTensorsAreViewsOfAPrivateMapping) {
  const fs::path path = test::scratch_dir("safetensors_zero_copy") / "x.safetensors";
  save_safetensors(path,
                   {{"w", torch::arange(12, torch::kFloat32).reshape({3, 4})}, {"i", torch::ones({2}, torch::kInt64)}});
  const std::string before = read_bytes(path);
  auto file = SafetensorsFile::open(path);
  torch::Tensor w = file->tensor("w");
  EXPECT_EQ(w.data_ptr(), static_cast<const void*>(file->data(file->info("w"))));
  EXPECT_EQ(file->tensor("i").data_ptr(), static_cast<const void*>(file->data(file->info("i"))));

  w.fill_(42);  // lands in copy-on-write pages
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(SafetensorsFile::open(path)->tensor("w")[0][0].item<float>(), 0.0f);

  file.reset();  // the tensor keeps the mapping alive
  EXPECT_EQ(w.sum().item<float>(), 42.0f * 12);
}

TEST(SafetensorsReader, OverwritingAMappedFileLeavesItsTensorsIntact) {
  // The writer renames a new file over the old one, so a live mapping keeps the old inode.
  const fs::path path = test::scratch_dir("safetensors_overwrite") / "x.safetensors";
  save_safetensors(path, {{"w", torch::full({1000}, 1.0f)}});
  const torch::Tensor old = SafetensorsFile::open(path)->tensor("w");
  save_safetensors(path, {{"w", torch::full({10}, 2.0f)}, {"v", torch::ones({3})}});
  EXPECT_TRUE(torch::equal(old, torch::full({1000}, 1.0f)));
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path)->tensor("w"), torch::full({10}, 2.0f)));
}

TEST(SafetensorsReader, MisalignedTensorsAreCopied) {
  // A writer other than the reference one may put a 1-byte tensor before a 4-byte one.
  const std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("f":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(padded.size());
  const float value = 3.25f;
  bytes += padded + "\x07" + std::string(reinterpret_cast<const char*>(&value), 4);
  const fs::path path = test::scratch_dir("safetensors_misaligned") / "x.safetensors";
  test::write_bytes(path, bytes);

  const auto file = SafetensorsFile::open(path);
  const torch::Tensor f = file->tensor("f");
  EXPECT_NE(f.data_ptr(), static_cast<const void*>(file->data(file->info("f"))));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data_ptr()) % alignof(float), 0u);
  EXPECT_EQ(f.item<float>(), value);
  EXPECT_EQ(file->tensor("u").item<uint8_t>(), 7);
}

TEST(SafetensorsReader, ZeroElementTensorsAndScalars) {
  const fs::path path = test::scratch_dir("safetensors_zero") / "x.safetensors";
  save_safetensors(path, {{"empty", torch::empty({0, 3})},
                          {"empty_long", torch::empty({4, 0}, torch::kInt64)},
                          {"scalar", torch::tensor(7, torch::kInt32)}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->tensor("empty").sizes(), torch::IntArrayRef({0, 3}));
  EXPECT_EQ(file->tensor("empty_long").sizes(), torch::IntArrayRef({4, 0}));
  EXPECT_EQ(file->tensor("empty_long").scalar_type(), torch::kInt64);
  EXPECT_EQ(file->tensor("scalar").dim(), 0);
  EXPECT_EQ(file->tensor("scalar").item<int>(), 7);
  EXPECT_EQ(file->info("empty").numel(), 0);
  EXPECT_EQ(file->info("scalar").numel(), 1);
}

TEST(SafetensorsReader, ConvertsDtypeOnRequest) {
  const fs::path path = test::scratch_dir("safetensors_convert") / "x.safetensors";
  const torch::Tensor w = torch::randn({4, 4});
  save_safetensors(path, {{"w", w}});
  const std::shared_ptr<TensorSource> source = open_tensor_source(path);
  const torch::Tensor bf16 = source->tensor("w", torch::kBFloat16);
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(bf16, w.to(torch::kBFloat16)));
  EXPECT_EQ(source->tensor("w", torch::kFloat32).data_ptr(), source->tensor("w").data_ptr());
}

TEST(SafetensorsReader, LookupAndOsErrorsNameTheFile) {
  const fs::path dir = test::scratch_dir("safetensors_lookup");
  save_safetensors(dir / "x.safetensors", {{"w", torch::ones({1})}});
  const auto file = SafetensorsFile::open(dir / "x.safetensors");
  EXPECT_TRUE(file->contains("w"));
  EXPECT_FALSE(file->contains("v"));
  try {
    file->info("v");
    ADD_FAILURE() << "no error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"v\""), std::string::npos) << e.what();
  }
  try {
    SafetensorsFile::open(dir / "absent.safetensors");
    ADD_FAILURE() << "no error";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("absent.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SafetensorsFile::open(dir), SystemError);
  EXPECT_THROW(open_tensor_source(dir / "model.bin"), ConfigError);
}

TEST(SafetensorsDtypes, MapBothWays) {
  for (const std::string dtype : {"BOOL", "U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "F64"}) {
    const torch::ScalarType type = safetensors_dtype_to_torch(dtype);
    EXPECT_EQ(type, expected_type(dtype));
    EXPECT_EQ(torch_dtype_to_safetensors(type), dtype);
    EXPECT_EQ(safetensors_dtype_size(dtype), c10::elementSize(type));
  }
  EXPECT_THROW(safetensors_dtype_to_torch("F8_E4M3"), FormatError);
  EXPECT_THROW(torch_dtype_to_safetensors(torch::kComplexDouble), Error);
  EXPECT_LT(safetensors_dtype_order("F32"), safetensors_dtype_order("F64"));
  EXPECT_LT(safetensors_dtype_order("F64"), safetensors_dtype_order("I64"));
  EXPECT_LT(safetensors_dtype_order("BF16"), safetensors_dtype_order("I32"));
}

}  // namespace
}  // namespace cvx
