// Internal: the byte layout and shard split shared by save_safetensors(_sharded) and the streaming
// writers, so a file written either way is the same file.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cvx/io/safetensors.h"
#include "cvx/io/safetensors_stream_writer.h"

namespace cvx::safetensors_layout {

struct PlannedTensor {
  std::string name;
  std::string dtype;  // "BF16", ...
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t bytes = 0;
  size_t input = 0;    // position in the caller's list
  uint64_t begin = 0;  // offset in the data buffer, set by lay_out_file
};

// Checks every declaration (reserved or duplicate name, supported dtype, shape >= 0, size without
// overflow) before anything is written; `where` starts each message. Keeps the input order.
std::vector<PlannedTensor> plan_tensors(const std::vector<TensorDecl>& decls, const std::string& where);

struct FileLayout {
  std::vector<PlannedTensor> tensors;  // in data order
  std::string header;                  // 8-byte length + JSON padded to a multiple of 8
  uint64_t data_size = 0;
  uint64_t file_size() const { return header.size() + data_size; }
};

// The reference library's layout: tensors by descending dtype rank then bytewise name; compact
// JSON with "__metadata__" first (omitted when empty), then the tensors in data order.
FileLayout lay_out_file(std::vector<PlannedTensor> tensors, const std::map<std::string, std::string>& metadata,
                        const std::string& where);

struct ShardSplit {
  std::vector<std::string> files;            // file names inside the folder
  std::vector<std::vector<size_t>> members;  // per file: positions in the planned list
  std::string index_json;                    // empty when everything fits in one file
};

// The split of save_safetensors_sharded (see there); `base` must be a plain file name.
ShardSplit split_into_shards(const std::vector<PlannedTensor>& tensors, const std::string& base,
                             uint64_t max_shard_bytes, const std::string& where);

// Removes files of checkpoint `base` in `dir` that `result` does not list (older shards, or the
// single file vs. the index), once the new checkpoint is complete.
void remove_stale(const std::filesystem::path& dir, const std::string& base, const ShardedWriteResult& result);

// Hands the row-major bytes of `tensor` to `sink` in pieces: directly when it is contiguous on the
// CPU, else copied to contiguous CPU memory about 16 MiB at a time, so saving a model never holds
// a second copy of a large tensor. Throws c10::Error when the tensor cannot be read.
void for_each_chunk(const torch::Tensor& tensor, const std::function<void(const void*, size_t)>& sink);

}  // namespace cvx::safetensors_layout
