// save_safetensors / save_safetensors_sharded: byte-for-byte the layout of the reference library (and
// the shard split of huggingface_hub, both in safetensors_layout), written atomically.
#include <nlohmann/json.hpp>

#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/safetensors.h"
#include "safetensors_layout.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little endian; tensors are written as they lie in memory");

namespace cvx {
namespace {

namespace fs = std::filesystem;
namespace layout = safetensors_layout;

// Checks every tensor before anything is written, so bad input never leaves a file half-replaced.
std::vector<layout::PlannedTensor> plan(const NamedTensors& tensors, const std::string& where) {
  std::vector<TensorDecl> decls;
  decls.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    CVX_CHECK(tensor.defined(), where, "tensor ", quote(name), " is undefined");
    CVX_CHECK(tensor.layout() == torch::kStrided, where, "tensor ", quote(name), " has layout ", tensor.layout(),
              "; only dense tensors can be saved");
    decls.push_back({name, tensor.scalar_type(), tensor.sizes().vec()});
  }
  return layout::plan_tensors(decls, where);
}

}  // namespace

void save_safetensors(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = "cannot save safetensors file " + quote(path.string()) + ": ";
  const layout::FileLayout planned = layout::lay_out_file(plan(tensors, where), metadata, where);

  AtomicFile file(path);
  file.write(planned.header);
  for (const layout::PlannedTensor& p : planned.tensors) {
    try {
      layout::for_each_chunk(tensors[p.input].second, [&](const void* data, size_t size) { file.write(data, size); });
    } catch (const c10::Error& e) {
      CVX_THROW(where, "tensor ", quote(p.name), ": ", one_line(e.what_without_backtrace(), 300));
    }
  }
  CVX_CHECK(file.bytes_written() == planned.file_size(), where, "wrote ", file.bytes_written(), " bytes instead of ",
            planned.file_size());
  file.commit();
}

ShardedWriteResult save_safetensors_sharded(const fs::path& dir, const std::string& base, const NamedTensors& tensors,
                                            uint64_t max_shard_bytes,
                                            const std::map<std::string, std::string>& metadata) {
  const std::string where = "cannot save checkpoint " + quote((dir / base).string()) + ": ";
  const layout::ShardSplit split = layout::split_into_shards(plan(tensors, where), base, max_shard_bytes, where);

  ShardedWriteResult result;
  for (size_t k = 0; k < split.files.size(); ++k) {
    NamedTensors part;
    for (const size_t i : split.members[k]) part.push_back(tensors[i]);
    save_safetensors(dir / split.files[k], part, metadata);
    result.files.push_back(dir / split.files[k]);
  }
  if (!split.index_json.empty()) {
    result.index = dir / (base + ".safetensors.index.json");
    write_file_atomically(result.index, split.index_json);
  }
  layout::remove_stale(dir, base, result);
  return result;
}

}  // namespace cvx
