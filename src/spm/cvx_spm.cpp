// cvx_spm: a C-ABI shim around libsentencepiece, built as its own shared module and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by src/model/sentencepiece.cpp. libsentencepiece carries its own
// copy of protobuf; linked into a process that also has libtorch's protobuf, the two resolve each
// other's symbols and the process crashes. Loaded this way, the module and libsentencepiece bind to
// their own symbols first and nothing of them leaks into the global namespace.
//
// Only C types cross the boundary, so the module is independent of the C++ ABI flags libtorch imposes
// on the rest of cvx. Functions that produce a variable amount of data return the full size and write
// at most `capacity` items: the caller retries with a larger buffer when the first one was too small.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#define CVX_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

int64_t copy_out(const std::string& text, char* out, int64_t capacity) {
  if (out && capacity > 0) std::memcpy(out, text.data(), std::min<size_t>(text.size(), capacity));
  return static_cast<int64_t>(text.size());
}

}  // namespace

// Bumped whenever a signature below changes; the loader refuses a module of another version.
CVX_SPM_EXPORT int cvx_spm_abi_version() { return 1; }

// A processor for the serialized ModelProto `data` (the bytes of spiece.model), or null with the
// reason in `error` (truncated to `error_capacity`, always NUL-terminated).
CVX_SPM_EXPORT void* cvx_spm_load(const char* data, int64_t size, char* error, int64_t error_capacity) {
  std::string message;
  try {
    auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = processor->LoadFromSerializedProto(std::string_view(data, static_cast<size_t>(size)));
    if (status.ok()) return processor.release();
    message = status.ToString();
  } catch (const std::exception& e) {
    message = e.what();
  }
  if (error && error_capacity > 0) {
    const int64_t n = std::min<int64_t>(copy_out(message, error, error_capacity - 1), error_capacity - 1);
    error[n] = '\0';
  }
  return nullptr;
}

CVX_SPM_EXPORT void cvx_spm_free(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

CVX_SPM_EXPORT int64_t cvx_spm_piece_size(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

// Id of `piece`, the unknown id when the vocabulary has no such piece.
CVX_SPM_EXPORT int64_t cvx_spm_piece_to_id(const void* processor, const char* piece, int64_t size) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->PieceToId(
      std::string_view(piece, static_cast<size_t>(size)));
}

// Piece of `id` (UTF-8 bytes, not NUL-terminated); returns its length, -1 for an id out of range.
CVX_SPM_EXPORT int64_t cvx_spm_id_to_piece(const void* processor, int64_t id, char* out, int64_t capacity) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  if (id < 0 || id >= p->GetPieceSize()) return -1;
  return copy_out(p->IdToPiece(static_cast<int>(id)), out, capacity);
}

// Encodes `text` (normalisation, dummy prefix, Viterbi) into ids; returns their count, -1 on error.
CVX_SPM_EXPORT int64_t cvx_spm_encode(const void* processor, const char* text, int64_t size, int64_t* ids,
                                      int64_t capacity) {
  std::vector<int> result;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(
      std::string_view(text, static_cast<size_t>(size)), &result);
  if (!status.ok()) return -1;
  for (int64_t i = 0; i < std::min<int64_t>(capacity, result.size()); ++i) ids[i] = result[i];
  return static_cast<int64_t>(result.size());
}

// Decodes ids into text; returns the byte length, -1 on error (e.g. an id out of range).
CVX_SPM_EXPORT int64_t cvx_spm_decode(const void* processor, const int64_t* ids, int64_t count, char* out,
                                      int64_t capacity) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  std::vector<int> pieces(ids, ids + count);
  for (int id : pieces) {
    if (id < 0 || id >= p->GetPieceSize()) return -1;
  }
  std::string text;
  if (!p->Decode(pieces, &text).ok()) return -1;
  return copy_out(text, out, capacity);
}
