// The checkpoints of a run folder: `output_dir/checkpoint-{step}/`, each complete or absent (it is
// assembled under `checkpoint-{step}.partial` and renamed into place last; a folder without
// trainer_state.json, or a .partial one, is the trace of a crash and never counts).
//
//   checkpoint-{step}/
//     trainer_state.json     step, epoch, sampler position, LR state, world size, RNG seeds (rank 0),
//                            and "files": every other file with its size and CRC-32C (checkpoint_manifest.h)
//     rng/rank-{r:05d}.bin   torch's CPU (and CUDA) generator states of rank r
//     state/                 the engine's sharded trainable state (dist/sharded_state.h)
//     config.ini             the resolved configuration of the run that wrote it
//     pytorch_lora_weights.safetensors   LoRA runs: the diffusers export of this step
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace cvx {

struct CheckpointFolder {
  int64_t step = 0;
  std::filesystem::path path;
};

inline constexpr const char* kTrainerStateFile = "trainer_state.json";

std::string checkpoint_folder_name(int64_t step);  // "checkpoint-{step}"

// Complete checkpoints in `output_dir`, ascending by step.
std::vector<CheckpointFolder> list_checkpoints(const std::filesystem::path& output_dir);

// What resume_from_checkpoint names: "" (start fresh: nullopt), "latest" (the newest complete
// checkpoint, nullopt when there is none), "latest_valid" (the newest one whose files verify; the
// skipped ones are logged with the reason; nullopt when there is none at all, a ConfigError when
// there are some but none verifies), or a path (which must be a complete checkpoint: a ConfigError
// naming the path and what is wrong with it otherwise, never a silent fresh start).
// The chosen checkpoint's files are verified against its manifest: a damaged one is a FormatError
// naming the file (`latest` never falls back silently); one without a manifest (written by an
// older cvx) is accepted with a warning.
std::optional<CheckpointFolder> resolve_resume_checkpoint(const std::string& option,
                                                          const std::filesystem::path& output_dir);

// Deletes the oldest complete checkpoints until at most `limit` remain (0 = keep all), never the
// one at `keep` (the run resumed from it); also removes stale `.partial` folders. Returns the
// deleted folders.
std::vector<std::filesystem::path> rotate_checkpoints(const std::filesystem::path& output_dir, int64_t limit,
                                                      const std::optional<std::filesystem::path>& keep);

}  // namespace cvx
