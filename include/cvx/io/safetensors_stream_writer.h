// Writing a safetensors file (or a sharded checkpoint) whose tensors arrive one by one, or in
// pieces, in any order: the sharded trainer gathers a model unit by unit to rank 0 and must save it
// without ever holding all of it. The header is laid out up front from the declarations, exactly as
// save_safetensors / save_safetensors_sharded would for tensors with these names, dtypes and shapes,
// so the files are byte-identical to theirs; each piece goes to its planned offset of a temporary
// file that replaces the target only once every declared byte was written exactly once.
// Not thread-safe: one thread writes.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cvx/io/safetensors.h"

namespace cvx {

class AtomicFile;

struct TensorDecl {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
};

class SafetensorsStreamWriter {
 public:
  // Checks the declarations (as save_safetensors checks tensors: duplicates, reserved name, dtype)
  // and writes the header to a temporary file beside `path`; throws Error / SystemError naming it.
  SafetensorsStreamWriter(const std::filesystem::path& path, const std::vector<TensorDecl>& tensors,
                          const std::map<std::string, std::string>& metadata = {});
  // Without a successful finish(): removes the temporary file, leaving `path` as it was.
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // All of declared tensor `name`; its dtype and shape must match the declaration. Any device,
  // any strides.
  void write(const std::string& name, const torch::Tensor& tensor);
  // Elements [element_offset, element_offset + part.numel()) of declared tensor `name`, flattened
  // row-major (part's own shape does not matter, its dtype must match). Ranges may not overlap
  // what was written before.
  void write_part(const std::string& name, int64_t element_offset, const torch::Tensor& part);

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws Error naming the first declared tensor (in declaration order) not completely written.
  void check_complete() const;
  // check_complete(), then fsync, rename over the target and fsync the folder.
  void finish();

  const std::filesystem::path& path() const { return path_; }

 private:
  struct Slot;
  std::string where() const;

  std::filesystem::path path_;
  std::unique_ptr<AtomicFile> file_;
  std::vector<Slot> slots_;              // declaration order
  std::map<std::string, size_t> index_;  // name -> slot
  uint64_t data_start_ = 0;
  bool finished_ = false;
};

// save_safetensors_sharded for streamed tensors: the same split (computed from the declarations in
// their order), the same file names, shard files written through SafetensorsStreamWriter and the
// index last; a single `<base>.safetensors` when everything fits.
class ShardedSafetensorsStreamWriter {
 public:
  ShardedSafetensorsStreamWriter(const std::filesystem::path& dir, const std::string& base,
                                 const std::vector<TensorDecl>& tensors, uint64_t max_shard_bytes,
                                 const std::map<std::string, std::string>& metadata = {});
  ~ShardedSafetensorsStreamWriter();

  void write(const std::string& name, const torch::Tensor& tensor);
  void write_part(const std::string& name, int64_t element_offset, const torch::Tensor& part);
  // Checks that every shard is complete before renaming any of them, then writes the index and
  // removes stale files of an earlier save of `base` (as save_safetensors_sharded does).
  ShardedWriteResult finish();

  // The files finish() will write (shards in order; the index empty for a single file).
  const ShardedWriteResult& planned() const { return planned_; }

 private:
  SafetensorsStreamWriter& shard_of(const std::string& name);

  std::filesystem::path dir_;
  std::string base_;
  std::vector<std::unique_ptr<SafetensorsStreamWriter>> shards_;
  std::map<std::string, size_t> owner_;  // tensor -> shard
  std::string index_json_;
  ShardedWriteResult planned_;
  bool finished_ = false;
};

}  // namespace cvx
