#include "cvx/train/checkpoint_folders.h"

#include <algorithm>
#include <cctype>

#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/io/json_file.h"
#include "cvx/train/checkpoint_manifest.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {
const std::string kPrefix = "checkpoint-";
const std::string kPartial = ".partial";

// The step of a folder named checkpoint-{digits}, else nullopt.
std::optional<int64_t> parse_step(const std::string& name) {
  if (name.compare(0, kPrefix.size(), kPrefix) != 0 || name.size() == kPrefix.size()) return std::nullopt;
  const std::string digits = name.substr(kPrefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); })) return std::nullopt;
  if (digits.size() > 18) return std::nullopt;
  return std::stoll(digits);
}

// Throws FormatError naming the damaged file (or an unreadable trainer_state.json).
void verify(const CheckpointFolder& c) {
  if (!verify_checkpoint_files(c.path, read_json_file(c.path / kTrainerStateFile)))
    CVX_WARN << "checkpoint " << c.path.string() << " has no file manifest (written by an older cvx): resuming "
             << "from it without verifying its files";
}
}  // namespace

std::string checkpoint_folder_name(int64_t step) { return kPrefix + std::to_string(step); }

std::vector<CheckpointFolder> list_checkpoints(const fs::path& output_dir) {
  std::vector<CheckpointFolder> out;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    if (!entry.is_directory()) continue;
    const auto step = parse_step(entry.path().filename().string());
    if (step && fs::exists(entry.path() / kTrainerStateFile)) out.push_back({*step, entry.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointFolder> resolve_resume_checkpoint(const std::string& option, const fs::path& output_dir) {
  if (option.empty()) return std::nullopt;
  if (option == "latest") {
    const auto all = list_checkpoints(output_dir);
    if (all.empty()) return std::nullopt;
    verify(all.back());
    return all.back();
  }
  if (option == "latest_valid") {
    const auto all = list_checkpoints(output_dir);
    if (all.empty()) return std::nullopt;
    std::string reasons;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      try {
        verify(*it);
        return *it;
      } catch (const Error& e) {
        CVX_WARN << "resume_from_checkpoint = latest_valid: skipping " << it->path.string() << ": " << e.message();
        reasons += (reasons.empty() ? "" : "; ") + it->path.filename().string() + ": " + e.message();
      }
    }
    CVX_THROW_AS(ConfigError, "[train] resume_from_checkpoint = latest_valid: none of the ", all.size(),
                 " checkpoints in ", output_dir.string(), " verifies (", reasons,
                 "); start fresh in another output_dir, or remove them");
  }
  const fs::path path(option);
  CVX_CHECK_AS(ConfigError, fs::is_directory(path), "[train] resume_from_checkpoint = ", option,
               ": no such folder. Give a checkpoint-{step} folder of a run (e.g. ",
               (output_dir / "checkpoint-200").string(),
               "), 'latest' for the newest one in output_dir or 'latest_valid' for the newest one that verifies");
  CVX_CHECK_AS(ConfigError, fs::exists(path / kTrainerStateFile), "[train] resume_from_checkpoint = ", option,
               " is not a complete checkpoint (no ", kTrainerStateFile,
               "): it is incomplete (a crash while saving) or not a cvx checkpoint; use 'latest' or an older one");
  const auto step = parse_step(path.filename().string());
  CVX_CHECK_AS(ConfigError, step.has_value(), "[train] resume_from_checkpoint = ", option,
               ": expected a folder named checkpoint-{step}");
  const CheckpointFolder folder{*step, path};
  verify(folder);
  return folder;
}

std::vector<fs::path> rotate_checkpoints(const fs::path& output_dir, int64_t limit,
                                         const std::optional<fs::path>& keep) {
  std::vector<fs::path> removed;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.size() > kPartial.size() &&
        name.compare(name.size() - kPartial.size(), kPartial.size(), kPartial) == 0 &&
        parse_step(name.substr(0, name.size() - kPartial.size()))) {
      fs::remove_all(entry.path(), ec);
      removed.push_back(entry.path());
    }
  }
  if (limit <= 0) return removed;
  auto all = list_checkpoints(output_dir);
  const auto is_kept = [&](const CheckpointFolder& c) {
    return keep && fs::weakly_canonical(c.path) == fs::weakly_canonical(*keep);
  };
  int64_t excess = static_cast<int64_t>(all.size()) - limit;
  for (const auto& c : all) {
    if (excess <= 0) break;
    if (is_kept(c)) continue;
    fs::remove_all(c.path, ec);
    CVX_CHECK_AS(SystemError, !ec, "cannot remove old checkpoint ", c.path.string(), ": ", ec.message());
    removed.push_back(c.path);
    --excess;
  }
  return removed;
}

}  // namespace cvx
