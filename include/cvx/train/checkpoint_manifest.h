// The integrity record of a checkpoint: every file of the folder with its size and CRC-32C, kept
// under "files" in trainer_state.json (written last, so a folder with it is complete). A resume
// checks the files against it, so a shard truncated or changed on disk (a node that died while the
// file system flushed, a bad disk) is refused by name instead of training on garbage.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace cvx {

// [{"path": "state/layout.json", "size": N, "crc32c": C}, ...] for every regular file under
// `dir` (relative paths, sorted) except trainer_state.json itself.
nlohmann::json checkpoint_manifest(const std::filesystem::path& dir);

// Checks every file the manifest in `state` (the parsed trainer_state.json of `dir`) records:
// throws FormatError naming the first file that is missing, has another size or another
// checksum, and how to fall back (`--train.resume_from_checkpoint latest_valid`). Returns false
// when `state` holds no manifest (a checkpoint of an older cvx; nothing can be checked).
bool verify_checkpoint_files(const std::filesystem::path& dir, const nlohmann::json& state);

}  // namespace cvx
