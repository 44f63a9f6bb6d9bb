#include "cvx/io/safetensors_stream_writer.h"

#include <iterator>

#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"
#include "safetensors_layout.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little endian; tensors are written as they lie in memory");

namespace cvx {

namespace fs = std::filesystem;
namespace layout = safetensors_layout;

struct SafetensorsStreamWriter::Slot {
  layout::PlannedTensor planned;
  torch::ScalarType dtype;
  // Element ranges written so far, begin -> end: disjoint, adjacent ones merged.
  std::map<int64_t, int64_t> written;
  int64_t num_written = 0;
};

SafetensorsStreamWriter::SafetensorsStreamWriter(const fs::path& path, const std::vector<TensorDecl>& tensors,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(path) {
  const layout::FileLayout planned = layout::lay_out_file(layout::plan_tensors(tensors, where()), metadata, where());
  slots_.resize(planned.tensors.size());
  for (const layout::PlannedTensor& p : planned.tensors) {
    slots_[p.input] = Slot{p, tensors[p.input].dtype, {}, 0};
    index_[p.name] = p.input;
  }
  file_ = std::make_unique<AtomicFile>(path_);
  file_->write_at(0, planned.header.data(), planned.header.size());
  data_start_ = planned.header.size();
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

std::string SafetensorsStreamWriter::where() const {
  return "cannot write safetensors file " + quote(path_.string()) + ": ";
}

void SafetensorsStreamWriter::write(const std::string& name, const torch::Tensor& tensor) {
  const auto it = index_.find(name);
  CVX_CHECK(it != index_.end(), where(), "tensor ", quote(name), " is not declared");
  const Slot& slot = slots_[it->second];
  CVX_CHECK(!tensor.defined() || tensor.sizes() == c10::IntArrayRef(slot.planned.shape), where(), "tensor ",
            quote(name), " is declared with shape ", c10::IntArrayRef(slot.planned.shape), " but given ",
            tensor.sizes());
  write_part(name, 0, tensor);
}

void SafetensorsStreamWriter::write_part(const std::string& name, int64_t element_offset, const torch::Tensor& part) {
  CVX_CHECK(!finished_, where(), "tensor ", quote(name), " written after finish()");
  const auto it = index_.find(name);
  CVX_CHECK(it != index_.end(), where(), "tensor ", quote(name), " is not declared");
  Slot& slot = slots_[it->second];
  CVX_CHECK(part.defined(), where(), "tensor ", quote(name), " is given undefined");
  CVX_CHECK(part.layout() == torch::kStrided, where(), "tensor ", quote(name), " is given with layout ", part.layout(),
            "; only dense tensors can be saved");
  CVX_CHECK(part.scalar_type() == slot.dtype, where(), "tensor ", quote(name), " is declared ", slot.dtype,
            " but given ", part.scalar_type());

  const int64_t total = slot.planned.numel;
  const int64_t n = part.numel();
  int64_t end = 0;
  if (__builtin_add_overflow(element_offset, n, &end)) end = INT64_MAX;  // only for the message
  CVX_CHECK(element_offset >= 0 && element_offset <= total && n <= total - element_offset, where(), "elements [",
            element_offset, ", ", end, ") of tensor ", quote(name), " are outside its ", total, " elements (shape ",
            c10::IntArrayRef(slot.planned.shape), ")");
  if (n == 0) return;
  // The range written last before `end` is the only one that can overlap [element_offset, end).
  auto next = slot.written.lower_bound(end);
  if (next != slot.written.begin()) {
    const auto prev = std::prev(next);
    CVX_CHECK(prev->second <= element_offset, where(), "elements [", element_offset, ", ", end, ") of tensor ",
              quote(name), " overlap elements [", std::max(prev->first, element_offset), ", ",
              std::min(prev->second, end), ") written before");
  }

  const uint64_t element_size = c10::elementSize(slot.dtype);
  uint64_t offset = data_start_ + slot.planned.begin + static_cast<uint64_t>(element_offset) * element_size;
  try {
    layout::for_each_chunk(part, [&](const void* data, size_t size) {
      file_->write_at(offset, data, size);
      offset += size;
    });
  } catch (const c10::Error& e) {
    CVX_THROW(where(), "tensor ", quote(name), ": ", one_line(e.what_without_backtrace(), 300));
  }

  // Recorded only once written, so a failed write can be retried.
  int64_t begin = element_offset;
  int64_t stop = end;
  if (next != slot.written.begin() && std::prev(next)->second == begin) begin = std::prev(next)->first;
  if (next != slot.written.end() && next->first == stop) {
    stop = next->second;
    slot.written.erase(next);
  }
  slot.written[begin] = stop;
  slot.num_written += n;
}

void SafetensorsStreamWriter::check_complete() const {
  const Slot* first = nullptr;
  size_t num_incomplete = 0;
  for (const Slot& slot : slots_) {
    if (slot.num_written == slot.planned.numel) continue;
    if (first == nullptr) first = &slot;
    ++num_incomplete;
  }
  if (first == nullptr) return;
  const auto gap = first->written.find(0) == first->written.end() ? 0 : first->written.at(0);
  CVX_THROW(where(), "tensor ", quote(first->planned.name), " is incomplete: ", first->num_written, " of ",
            first->planned.numel, " elements written (first missing: element ", gap, "); ", num_incomplete, " of ",
            slots_.size(), " tensors incomplete");
}

void SafetensorsStreamWriter::finish() {
  CVX_CHECK(!finished_, where(), "finish() called twice");
  check_complete();
  file_->commit();
  finished_ = true;
}

ShardedSafetensorsStreamWriter::ShardedSafetensorsStreamWriter(const fs::path& dir, const std::string& base,
                                                               const std::vector<TensorDecl>& tensors,
                                                               uint64_t max_shard_bytes,
                                                               const std::map<std::string, std::string>& metadata)
    : dir_(dir), base_(base) {
  const std::string where = "cannot save checkpoint " + quote((dir / base).string()) + ": ";
  const layout::ShardSplit split =
      layout::split_into_shards(layout::plan_tensors(tensors, where), base, max_shard_bytes, where);
  for (size_t k = 0; k < split.files.size(); ++k) {
    std::vector<TensorDecl> part;
    for (const size_t i : split.members[k]) {
      part.push_back(tensors[i]);
      owner_[tensors[i].name] = k;
    }
    planned_.files.push_back(dir / split.files[k]);
    shards_.push_back(std::make_unique<SafetensorsStreamWriter>(planned_.files.back(), part, metadata));
  }
  if (!split.index_json.empty()) planned_.index = dir / (base + ".safetensors.index.json");
  index_json_ = split.index_json;
}

ShardedSafetensorsStreamWriter::~ShardedSafetensorsStreamWriter() = default;

SafetensorsStreamWriter& ShardedSafetensorsStreamWriter::shard_of(const std::string& name) {
  const auto it = owner_.find(name);
  CVX_CHECK(it != owner_.end(), "cannot save checkpoint ", quote((dir_ / base_).string()), ": tensor ", quote(name),
            " is not declared");
  return *shards_[it->second];
}

void ShardedSafetensorsStreamWriter::write(const std::string& name, const torch::Tensor& tensor) {
  shard_of(name).write(name, tensor);
}

void ShardedSafetensorsStreamWriter::write_part(const std::string& name, int64_t element_offset,
                                                const torch::Tensor& part) {
  shard_of(name).write_part(name, element_offset, part);
}

ShardedWriteResult ShardedSafetensorsStreamWriter::finish() {
  CVX_CHECK(!finished_, "cannot save checkpoint ", quote((dir_ / base_).string()), ": finish() called twice");
  // All shards complete before the first rename, so a missing tensor replaces nothing.
  for (const auto& shard : shards_) shard->check_complete();
  for (const auto& shard : shards_) shard->finish();
  if (!planned_.index.empty()) write_file_atomically(planned_.index, index_json_);
  layout::remove_stale(dir_, base_, planned_);
  finished_ = true;
  return planned_;
}

}  // namespace cvx
