// safetensors: a memory-mapped reader that validates the whole header before trusting any of it,
// an atomic writer (temp file + fsync + rename) that reproduces the reference library's byte
// layout, and sharded checkpoints through a `*.safetensors.index.json` weight map.
//
// File format: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
// The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
// to the data buffer) plus an optional "__metadata__" object of string -> string.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cvx {

// Storage dtypes we accept: BOOL U8 I8 I16 I32 I64 F16 BF16 F32 F64.
torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype);  // throws FormatError if unknown
std::string torch_dtype_to_safetensors(torch::ScalarType type);          // throws Error if unsupported
size_t safetensors_dtype_size(const std::string& dtype);
// Rank in the reference library's Dtype enum (BOOL < U8 < I8 < I16 < F16 < BF16 < I32 < F32 < F64 <
// I64); its writer lays tensors out by descending rank, which also keeps every tensor aligned.
int safetensors_dtype_order(const std::string& dtype);

struct TensorInfo {
  std::string name;
  std::string dtype;              // as written in the file, e.g. "BF16"
  torch::ScalarType scalar_type;  // the matching torch type
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
  uint64_t num_bytes() const { return end - begin; }
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t header_size = 0;  // N
  uint64_t data_size = 0;    // bytes of the data buffer
};

// Parses and validates a complete safetensors image held in memory; `source` names it in errors.
// Checks: 8-byte length within the size, JSON well-formed and an object, known dtypes, integer
// shapes >= 0, shape x dtype size == byte range (overflow-safe), ranges in bounds, sorted and
// non-overlapping, covering the whole data buffer, `__metadata__` a string -> string object.
// Throws cvx::FormatError naming `source` (and the tensor, when one is at fault).
SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source);

// Anything tensors can be loaded from by name: one file, or a sharded checkpoint.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool contains(const std::string& name) const = 0;
  virtual const TensorInfo& info(const std::string& name) const = 0;  // throws naming source + tensor
  // Zero-copy view of the mapped bytes when alignment allows (copy-on-write private mapping:
  // writing to it never changes the file); keeps the mapping alive as long as the tensor.
  virtual torch::Tensor tensor(const std::string& name) const = 0;
  // The tensor converted to `dtype` (a view when it already has that dtype).
  torch::Tensor tensor(const std::string& name, torch::ScalarType dtype) const;
  virtual std::map<std::string, std::string> metadata() const = 0;
  virtual std::string description() const = 0;  // path(s) for messages
};

class SafetensorsFile : public TensorSource {
 public:
  // Maps and validates `path`; throws FormatError / SystemError naming the file.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile() override;

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  std::vector<std::string> names() const override;
  bool contains(const std::string& name) const override;
  const TensorInfo& info(const std::string& name) const override;
  torch::Tensor tensor(const std::string& name) const override;
  using TensorSource::tensor;
  std::map<std::string, std::string> metadata() const override { return header_.metadata; }
  std::string description() const override { return path_.string(); }
  // Raw bytes of one tensor inside the mapping.
  const uint8_t* data(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  struct Mapping;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;  // name -> position in header_.tensors
};

// A checkpoint split over several files, described by `<base>.safetensors.index.json`:
// {"metadata": {...}, "weight_map": {"tensor name": "file name relative to the index"}}.
class ShardedSafetensors : public TensorSource {
 public:
  // Validates the index: every listed file opens, contains the tensors mapped to it, and no tensor
  // is in two files; tensors present in a shard but missing from the weight map are an error.
  static std::shared_ptr<ShardedSafetensors> open(const std::filesystem::path& index_json);

  const std::filesystem::path& index_path() const { return index_path_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& shards() const { return shards_; }
  std::vector<std::string> names() const override;
  bool contains(const std::string& name) const override;
  const TensorInfo& info(const std::string& name) const override;
  torch::Tensor tensor(const std::string& name) const override;
  using TensorSource::tensor;
  // The index's "metadata" (e.g. total_size) rendered as strings, merged with the first shard's.
  std::map<std::string, std::string> metadata() const override;
  std::string description() const override { return index_path_.string(); }
  // Which shard holds `name`.
  const SafetensorsFile& shard_of(const std::string& name) const;

 private:
  std::filesystem::path index_path_;
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> owner_;  // tensor -> shard position
  std::map<std::string, std::string> metadata_;
};

// Opens a .safetensors file or a .safetensors.index.json (by file name).
std::shared_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path);

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes one file atomically (temp file in the same folder, fsync, rename, fsync of the folder).
// Layout matches the reference `safetensors` library byte for byte: compact JSON with
// "__metadata__" first, tensors ordered by dtype (descending: I64/F64 before F32, ... U8, BOOL)
// then name, header padded with spaces to a multiple of 8. Tensors may live on any device and be
// non-contiguous. Duplicate names are an error.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct ShardedWriteResult {
  std::vector<std::filesystem::path> files;  // shard files written
  std::filesystem::path index;               // empty when everything fit in one file
};

// Writes `<dir>/<base>.safetensors` when the tensors fit in max_shard_bytes, otherwise
// `<dir>/<base>-00001-of-0000K.safetensors` ... plus `<dir>/<base>.safetensors.index.json`
// ({"metadata": {"total_size": bytes}, "weight_map": {...}}), as diffusers/transformers do.
// A single tensor larger than the limit gets a shard of its own. Each file is written atomically;
// the index is written last.
ShardedWriteResult save_safetensors_sharded(const std::filesystem::path& dir, const std::string& base,
                                            const NamedTensors& tensors, uint64_t max_shard_bytes,
                                            const std::map<std::string, std::string>& metadata = {});

}  // namespace cvx
