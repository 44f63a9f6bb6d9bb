// Every validation rule of the safetensors reader, each with a crafted file: the error must be a
// FormatError, one line, naming the file and (where one is at fault) the tensor.
#include <gtest/gtest.h>

#include <functional>
#include <optional>

#include "cvx/core/error.h"
#include "cvx/io/safetensors.h"
#include "safetensors_test_util.h"
#include "test_util.h"

namespace cvx {
namespace {

namespace fs = std::filesystem;

// A file image: 8-byte little-endian length (the header's, unless given), header, data.
std::string image(const std::string& header, const std::string& data = "", std::optional<uint64_t> length = {}) {
  const uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

// One F32 tensor "w" with the given fields and `data_bytes` of data.
std::string one_tensor(const std::string& dtype, const std::string& shape, const std::string& offsets,
                       size_t data_bytes = 4) {
  return image(R"({"w":)" + entry(dtype, shape, offsets) + "}", std::string(data_bytes, '\0'));
}

struct BadFile {
  std::string label;
  std::string bytes;
  std::string expected;  // part of the message
  std::string tensor;    // the tensor the message must name, if any
};

std::vector<BadFile> bad_files() {
  const std::string f32 = R"("F32")";
  const std::string w4 = entry(f32, "[1]", "[0,4]");
  return {
      {"empty", "", "empty", ""},
      {"shorter than the length field", std::string("\x02\x00\x00", 3), "shorter than the 8-byte", ""},
      {"header length beyond the file", image("{}", "", 100), "header length 100 exceeds the 2 bytes", ""},
      {"header length huge", image("{}", "", uint64_t{1} << 62), "exceeds the limit", ""},
      {"header length all ones", image("{}", "", ~uint64_t{0}), "exceeds the limit", ""},
      {"zero header length", image("", "", 0), "not valid JSON", ""},
      {"unterminated JSON", image(R"({"w":)"), "not valid JSON", ""},
      {"trailing garbage", image(R"({} x)"), "not valid JSON", ""},
      {"NUL padding", image(std::string("{}\0\0\0\0\0\0", 8)), "NUL byte", ""},
      {"text after a NUL", image(std::string("{}\0{\"w\":5}", 10)), "NUL byte", ""},
      {"invalid UTF-8", image("{\"\xff\":1}"), "not valid JSON", ""},
      {"array header", image("[1,2]"), "not an object", ""},
      {"string header", image(R"("w")"), "not an object", ""},
      {"entry not an object", image(R"({"w":5})"), "not an object", "w"},
      {"missing dtype", image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), "missing \"dtype\"", "w"},
      {"dtype not a string", one_tensor("4", "[1]", "[0,4]"), "not a string", "w"},
      {"unknown dtype", one_tensor(R"("F33")", "[1]", "[0,4]"), "unknown dtype \"F33\"", "w"},
      {"unsupported dtype", one_tensor(R"("F8_E4M3")", "[4]", "[0,4]"), "unknown dtype", "w"},
      {"missing shape", image(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"), "missing \"shape\"", "w"},
      {"shape not an array", one_tensor(f32, "1", "[0,4]"), "not an array", "w"},
      {"negative shape", one_tensor(f32, "[-1]", "[0,4]"), "shape entry 0 is -1", "w"},
      {"fractional shape", one_tensor(f32, "[1,2.5]", "[0,4]"), "shape entry 1 is 2.5", "w"},
      {"float shape", one_tensor(f32, "[1.0]", "[0,4]"), "not a non-negative 64-bit integer", "w"},
      {"string shape", one_tensor(f32, R"(["1"])", "[0,4]"), "not a non-negative 64-bit integer", "w"},
      {"shape beyond int64", one_tensor(f32, "[9223372036854775808]", "[0,4]"), "not a non-negative", "w"},
      {"shape beyond uint64", one_tensor(f32, "[99999999999999999999]", "[0,4]"), "not a non-negative", "w"},
      {"shape product overflows", one_tensor(f32, "[4294967296,4294967296,4294967296]", "[0,4]"), "too many elements",
       "w"},
      {"empty shape product overflows", one_tensor(f32, "[0,4611686018427387904,4]", "[0,0]", 0), "too many elements",
       "w"},
      {"bytes overflow", one_tensor(f32, "[4611686018427387904]", "[0,4]"), "more than 2^64", "w"},
      {"missing data_offsets", image(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"), "missing \"data_offsets\"", "w"},
      {"data_offsets not an array", one_tensor(f32, "[1]", "4"), "not two non-negative integers", "w"},
      {"three data_offsets", one_tensor(f32, "[1]", "[0,4,4]"), "not two non-negative integers", "w"},
      {"negative data_offsets", one_tensor(f32, "[1]", "[-4,0]"), "not two non-negative integers", "w"},
      {"float data_offsets", one_tensor(f32, "[1]", "[0,4.0]"), "not two non-negative integers", "w"},
      {"data_offsets reversed", one_tensor(f32, "[0]", "[4,0]"), "end before they begin", "w"},
      {"data_offsets disagree with shape", one_tensor(f32, "[2]", "[0,4]"), "needs 8 bytes", "w"},
      {"data_offsets out of bounds", one_tensor(f32, "[2]", "[0,8]"), "exceed the data buffer of 4 bytes", "w"},
      {"truncated data", one_tensor(f32, "[4]", "[0,16]", 10), "exceed the data buffer of 10 bytes", "w"},
      {"overlap",
       image(R"({"a":)" + entry(f32, "[2]", "[0,8]") + R"(,"b":)" + entry(f32, "[2]", "[4,12]") + "}",
             std::string(12, '\0')),
       "overlap tensor \"a\"", "b"},
      {"empty tensor inside another",
       image(R"({"a":)" + entry(f32, "[2]", "[0,8]") + R"(,"z":)" + entry(f32, "[0]", "[4,4]") + "}",
             std::string(8, '\0')),
       "overlap", "z"},
      {"gap", image(R"({"a":)" + w4 + R"(,"b":)" + entry(f32, "[1]", "[8,12]") + "}", std::string(12, '\0')),
       "gap after byte 4 (end of tensor \"a\")", "b"},
      {"gap at the start", one_tensor(f32, "[1]", "[4,8]", 8), "gap after byte 0 (start of the data)", "w"},
      {"trailing bytes", one_tensor(f32, "[1]", "[0,4]", 8), "cover 4 bytes but the data buffer holds 8", ""},
      {"data without tensors", image("{}", "abcd"), "cover 0 bytes", ""},
      {"metadata not an object", image(R"({"__metadata__":[1]})"), "\"__metadata__\" is [1]", ""},
      {"metadata null", image(R"({"__metadata__":null})"), "not an object of strings", ""},
      {"metadata value not a string", image(R"({"__metadata__":{"format":1}})"), "entry \"format\" is 1", "format"},
      {"duplicate tensor", image(R"({"w":)" + w4 + R"(,"w":)" + w4 + "}", "abcd"), "lists \"w\" twice", "w"},
      {"control characters in a name", image(R"({"a\nb":5})"), "not an object", "a\\x0ab"},
  };
}

void expect_format_error(const std::function<void()>& action, const BadFile& bad, const std::string& source) {
  try {
    action();
    ADD_FAILURE() << "accepted";
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(source), std::string::npos) << what;
    EXPECT_NE(what.find(bad.expected), std::string::npos) << what;
    if (!bad.tensor.empty()) EXPECT_NE(what.find('"' + bad.tensor + '"'), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_FALSE(e.where().empty());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a FormatError: " << e.what();
  }
}

TEST(SafetensorsValidation, EveryRuleHasASpecificMessage) {
  const fs::path dir = test::scratch_dir("safetensors_bad");
  int index = 0;
  for (const BadFile& bad : bad_files()) {
    SCOPED_TRACE(bad.label);
    const std::string name = "bad" + std::to_string(index++) + ".safetensors";
    test::write_bytes(dir / name, bad.bytes);
    expect_format_error([&] { SafetensorsFile::open(dir / name); }, bad, (dir / name).string());
    expect_format_error(
        [&] { parse_safetensors(reinterpret_cast<const uint8_t*>(bad.bytes.data()), bad.bytes.size(), "in memory"); },
        bad, "in memory");
  }
}

TEST(SafetensorsValidation, BoolTensorsHoldOnlyZerosAndOnes) {
  const fs::path path = test::scratch_dir("safetensors_bool") / "x.safetensors";
  test::write_bytes(path, image(R"({"ok":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]},)"
                                R"("bad":{"dtype":"BOOL","shape":[2],"data_offsets":[2,4]}})",
                                std::string("\x01\x00\x01\x02", 4)));
  const auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(torch::equal(file->tensor("ok"), torch::tensor({true, false})));
  try {
    file->tensor("bad");
    ADD_FAILURE() << "accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("\"bad\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST(SafetensorsValidation, AcceptsEdgeCasesOfValidFiles) {
  const auto parse = [](const std::string& bytes) {
    return parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test");
  };
  EXPECT_TRUE(parse(image("{}")).tensors.empty());
  EXPECT_TRUE(parse(image(" \n{} \t")).tensors.empty());
  // Unknown fields are ignored, as by the reference library; empty tensors may sit at the end.
  const auto header = parse(image(R"({"b":{"dtype":"U8","shape":[0,5],"data_offsets":[2,2],"extra":1},)"
                                  R"("a":{"dtype":"I16","shape":[],"data_offsets":[0,2]},)"
                                  R"("__metadata__":{"k":"v"}})",
                                  "xy"));
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[0].name, "a");  // sorted by offset
  EXPECT_TRUE(header.tensors[0].shape.empty());
  EXPECT_EQ(header.tensors[0].numel(), 1);
  EXPECT_EQ(header.tensors[1].shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(header.metadata.at("k"), "v");
  EXPECT_EQ(header.data_size, 2u);
}

}  // namespace
}  // namespace cvx
