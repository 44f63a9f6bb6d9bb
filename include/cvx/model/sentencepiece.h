// A sentencepiece model (spiece.model), run by libsentencepiece itself so that normalisation and
// segmentation are exactly the reference's. The library is reached only through the cvx_spm module
// (src/spm/cvx_spm.cpp), loaded privately at first use: libsentencepiece bundles a protobuf that
// clashes with libtorch's when both are linked into one process.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cvx {

class SentencePiece {
 public:
  // Throws ConfigError if the file is missing, FormatError if sentencepiece rejects it, SystemError
  // if the cvx_spm module cannot be loaded.
  static SentencePiece load(const std::filesystem::path& model_file);

  int64_t piece_size() const;
  int64_t piece_to_id(std::string_view piece) const;  // the unknown id for a piece not in the model
  std::string id_to_piece(int64_t id) const;          // throws for an id outside [0, piece_size)
  std::vector<int64_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int64_t>& ids) const;

  // The cvx_spm module this process uses, loading it if needed. Looked up as $CVX_SPM_MODULE, next to
  // the executable, in ../lib beside it, then at its build-tree location.
  static std::filesystem::path module_path();

  struct Api;  // the module's entry points (defined in the .cpp)

 private:
  const Api* api_ = nullptr;
  std::shared_ptr<void> processor_;
  std::string source_;  // the model file, for messages
};

}  // namespace cvx
