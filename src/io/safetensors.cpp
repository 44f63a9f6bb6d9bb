// Format core: dtype tables and the header parser/validator. Deliberately free of torch calls (only
// the ScalarType enum is used) so the fuzz harness can compile this file alone with sanitizers.
#include "cvx/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>

#include "cvx/core/error.h"

namespace cvx {
namespace {

using nlohmann::json;

struct Dtype {
  const char* name;
  torch::ScalarType type;
  size_t size;
};

// In the reference library's enum order (see safetensors_dtype_order).
// clang-format off
constexpr Dtype kDtypes[] = {
    {"BOOL", torch::kBool, 1}, {"U8", torch::kByte, 1},      {"I8", torch::kChar, 1},
    {"I16", torch::kShort, 2}, {"F16", torch::kHalf, 2},     {"BF16", torch::kBFloat16, 2},
    {"I32", torch::kInt, 4},   {"F32", torch::kFloat, 4},    {"F64", torch::kDouble, 8},
    {"I64", torch::kLong, 8},
};
// clang-format on

const Dtype* find_dtype(const std::string& name) {
  for (const Dtype& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const Dtype& dtype_or_throw(const std::string& name) {
  const Dtype* d = find_dtype(name);
  CVX_CHECK_AS(FormatError, d != nullptr, "unknown safetensors dtype ", quote(name),
               " (expected BOOL, U8, I8, I16, I32, I64, F16, BF16, F32 or F64)");
  return *d;
}

// The reference library refuses larger headers too; it bounds what a corrupt length can make us parse.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

// Non-negative integers that fit int64 (torch's sizes); JSON floats like 2.0 are not integers.
bool get_count(const json& value, uint64_t& out) {
  if (value.is_number_unsigned()) {
    out = value.get<uint64_t>();
  } else if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(value.get<int64_t>());
  } else {
    return false;
  }
  return out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

std::string render(const json& value) { return one_line(value.dump(), 60); }

// Parses one tensor entry; `where` prefixes every message with the file and the tensor.
TensorInfo parse_tensor(const std::string& name, const json& entry, uint64_t data_size, const std::string& where) {
  CVX_CHECK_AS(FormatError, entry.is_object(), where, "entry is ", render(entry), ", not an object");
  TensorInfo info;
  info.name = name;

  const auto dtype = entry.find("dtype");
  CVX_CHECK_AS(FormatError, dtype != entry.end(), where, "missing \"dtype\"");
  CVX_CHECK_AS(FormatError, dtype->is_string(), where, "\"dtype\" is ", render(*dtype), ", not a string");
  info.dtype = dtype->get<std::string>();
  const Dtype* known = find_dtype(info.dtype);
  CVX_CHECK_AS(FormatError, known != nullptr, where, "unknown dtype ", quote(info.dtype),
               " (expected BOOL, U8, I8, I16, I32, I64, F16, BF16, F32 or F64)");
  info.scalar_type = known->type;

  // Sizes multiply overflow-checked, zero entries counted as one: torch computes strides from the
  // non-zero sizes even when the tensor is empty, so their product must stay representable too.
  const auto shape = entry.find("shape");
  CVX_CHECK_AS(FormatError, shape != entry.end(), where, "missing \"shape\"");
  CVX_CHECK_AS(FormatError, shape->is_array(), where, "\"shape\" is ", render(*shape), ", not an array");
  uint64_t numel = 1;
  uint64_t nonzero_numel = 1;
  for (size_t i = 0; i < shape->size(); ++i) {
    uint64_t dim = 0;
    CVX_CHECK_AS(FormatError, get_count((*shape)[i], dim), where, "shape entry ", i, " is ", render((*shape)[i]),
                 ", not a non-negative 64-bit integer");
    numel *= dim;  // cannot overflow: bounded by nonzero_numel, checked below
    CVX_CHECK_AS(FormatError,
                 !__builtin_mul_overflow(nonzero_numel, std::max<uint64_t>(dim, 1), &nonzero_numel) &&
                     nonzero_numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 where, "shape ", render(*shape), " has too many elements");
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  const auto offsets = entry.find("data_offsets");
  CVX_CHECK_AS(FormatError, offsets != entry.end(), where, "missing \"data_offsets\"");
  CVX_CHECK_AS(FormatError,
               offsets->is_array() && offsets->size() == 2 && get_count((*offsets)[0], info.begin) &&
                   get_count((*offsets)[1], info.end),
               where, "\"data_offsets\" is ", render(*offsets), ", not two non-negative integers");
  CVX_CHECK_AS(FormatError, info.begin <= info.end, where, "data_offsets [", info.begin, ", ", info.end,
               "] end before they begin");
  CVX_CHECK_AS(FormatError, info.end <= data_size, where, "data_offsets [", info.begin, ", ", info.end,
               "] exceed the data buffer of ", data_size, " bytes (truncated file?)");
  uint64_t bytes = 0;
  const bool fits = !__builtin_mul_overflow(numel, known->size, &bytes);
  CVX_CHECK_AS(FormatError, fits && bytes == info.num_bytes(), where, "shape ", render(*shape), " of ", info.dtype,
               " needs ", fits ? std::to_string(bytes) : std::string("more than 2^64"), " bytes but data_offsets [",
               info.begin, ", ", info.end, "] hold ", info.num_bytes());
  return info;
}

}  // namespace

torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype) { return dtype_or_throw(dtype).type; }

std::string torch_dtype_to_safetensors(torch::ScalarType type) {
  for (const Dtype& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  CVX_THROW("torch dtype ", c10::toString(type),
            " cannot be stored in safetensors (supported: bool, uint8, int8, int16, int32, int64, float16, "
            "bfloat16, float32, float64)");
}

size_t safetensors_dtype_size(const std::string& dtype) { return dtype_or_throw(dtype).size; }

int safetensors_dtype_order(const std::string& dtype) { return static_cast<int>(&dtype_or_throw(dtype) - kDtypes); }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;  // validated by the parser not to overflow
  return n;
}

SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source) {
  const std::string where = "safetensors file " + quote(source) + ": ";
  CVX_CHECK_AS(FormatError, size != 0, where, "the file is empty");
  CVX_CHECK_AS(FormatError, size >= 8, where, "the file is ", size,
               " bytes long, shorter than the 8-byte header length field");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little endian, whatever the host
  CVX_CHECK_AS(FormatError, n <= kMaxHeaderSize, where, "header length ", n, " exceeds the limit of ", kMaxHeaderSize,
               " bytes (corrupt file, or not a safetensors file)");
  CVX_CHECK_AS(FormatError, n <= size - 8, where, "header length ", n, " exceeds the ", size - 8,
               " bytes after the length field (truncated file?)");

  // JSON text never holds a raw NUL, but nlohmann's lexer takes one for the end of the input and
  // would accept whatever follows it.
  CVX_CHECK_AS(FormatError, std::memchr(bytes + 8, 0, n) == nullptr, where,
               "header is not valid JSON: it holds a NUL byte");

  SafetensorsHeader header;
  header.header_size = n;
  header.data_size = size - 8 - n;

  // nlohmann keeps the last of duplicate keys; a duplicated tensor name would hide an entry, so the
  // callback records top-level keys as they are parsed.
  std::set<std::string> keys;
  std::string duplicate;
  json root;
  try {
    root = json::parse(
        bytes + 8, bytes + 8 + n,
        [&](int depth, json::parse_event_t event, json& parsed) {
          if (depth == 1 && event == json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second &&
              duplicate.empty()) {
            duplicate = parsed.get<std::string>();
          }
          return true;
        },
        /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    std::string message = e.what();
    if (const size_t bracket = message.find("] "); message.rfind("[json.", 0) == 0 && bracket != std::string::npos) {
      message.erase(0, bracket + 2);
    }
    CVX_THROW_AS(FormatError, where, "header is not valid JSON: ", one_line(message));
  }
  CVX_CHECK_AS(FormatError, root.is_object(), where, "header is a JSON ", root.type_name(), ", not an object");
  CVX_CHECK_AS(FormatError, duplicate.empty(), where, "header lists ", quote(duplicate), " twice");

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      CVX_CHECK_AS(FormatError, entry.is_object(), where, "\"__metadata__\" is ", render(entry),
                   ", not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        CVX_CHECK_AS(FormatError, value.is_string(), where, "\"__metadata__\" entry ", quote(key), " is ",
                     render(value), ", not a string");
        header.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    header.tensors.push_back(parse_tensor(name, entry, header.data_size, where + "tensor " + quote(name) + ": "));
  }

  // Like the reference library: laid end to end, the byte ranges must tile the data buffer exactly.
  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : header.tensors) {
    CVX_CHECK_AS(FormatError, t.begin <= covered, where, "tensor ", quote(t.name), ": data_offsets [", t.begin, ", ",
                 t.end, "] leave a gap after byte ", covered,
                 previous ? " (end of tensor " + quote(previous->name) + ")" : std::string(" (start of the data)"));
    CVX_CHECK_AS(FormatError, t.begin == covered, where, "tensor ", quote(t.name), ": data_offsets [", t.begin, ", ",
                 t.end, "] overlap tensor ", quote(previous->name), ", which ends at byte ", covered);
    covered = t.end;
    previous = &t;
  }
  CVX_CHECK_AS(FormatError, covered == header.data_size, where, "the tensors cover ", covered,
               " bytes but the data buffer holds ", header.data_size, " (trailing bytes)");
  return header;
}

}  // namespace cvx
