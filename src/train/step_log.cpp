#include "cvx/train/step_log.h"

#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "cvx/core/error.h"
#include "cvx/core/format_bytes.h"
#include "cvx/core/log.h"
#include "cvx/io/atomic_file.h"

namespace cvx {

namespace {
std::string printf_string(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}
std::string si(double value) {  // 11.0k, 2.3M
  if (value >= 1e9) return printf_string("%.1fG", value / 1e9);
  if (value >= 1e6) return printf_string("%.1fM", value / 1e6);
  if (value >= 1e3) return printf_string("%.1fk", value / 1e3);
  return printf_string("%.1f", value);
}
}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buffer[64];
  if (s >= 3600) {
    std::snprintf(buffer, sizeof(buffer), "%lldh%02lldm%02llds", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else if (s >= 60) {
    std::snprintf(buffer, sizeof(buffer), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%llds", static_cast<long long>(s));
  }
  return buffer;
}

std::string format_step_line(const StepReport& r) {
  std::ostringstream os;
  os << "step " << r.step << "/" << r.total_steps << " | epoch " << r.epoch << " | loss "
     << printf_string("%.6f", r.loss) << " | grad_norm " << printf_string("%.4g", r.grad_norm) << " | lr "
     << printf_string("%.3e", r.lr) << " | " << printf_string("%.3f", r.step_seconds) << " s/step | data "
     << printf_string("%.3f", r.data_wait_seconds) << " s | mem " << format_bytes(r.peak_memory_bytes) << " | "
     << printf_string("%.3g", r.samples_per_second) << " samples/s | " << si(r.tokens_per_second) << " tokens/s | "
     << printf_string("%.3g", r.tflops) << " TFLOP/s | MFU "
     << (r.mfu < 0 ? std::string("n/a") : printf_string("%.1f%%", 100.0 * r.mfu)) << " | ETA "
     << format_duration(r.eta_seconds);
  return os.str();
}

std::string format_progress_line(const StepReport& r) {
  const double percent =
      r.total_steps > 0 ? 100.0 * static_cast<double>(r.step) / static_cast<double>(r.total_steps) : 0.0;
  std::ostringstream os;
  os << "step " << r.step << "/" << r.total_steps << " (" << printf_string("%.1f%%", percent) << ") | loss "
     << printf_string("%.4f", r.loss) << " | " << printf_string("%.2f", r.step_seconds) << " s/step | ETA "
     << format_duration(r.eta_seconds);
  return os.str();
}

void log_step(const StepReport& r) {
  static const bool interactive = log::console_is_interactive();
  if (interactive) {
    CVX_INFO_FILE_ONLY << format_step_line(r);
    log::show_status(format_progress_line(r));
  } else {
    CVX_INFO << format_step_line(r);
  }
}

nlohmann::json step_json(const StepReport& r) {
  nlohmann::json j{{"step", r.step},
                   {"total_steps", r.total_steps},
                   {"epoch", r.epoch},
                   {"loss", r.loss},
                   {"grad_norm", r.grad_norm},
                   {"lr", r.lr},
                   {"step_seconds", r.step_seconds},
                   {"data_wait_seconds", r.data_wait_seconds},
                   {"peak_memory_bytes", r.peak_memory_bytes},
                   {"memory_kind", r.memory_kind},
                   {"samples", r.samples},
                   {"samples_per_second", r.samples_per_second},
                   {"tokens_per_second", r.tokens_per_second},
                   {"tflops", r.tflops},
                   {"eta_seconds", r.eta_seconds}};
  if (r.mfu >= 0) j["mfu"] = r.mfu;
  if (r.sequence_bytes > 0) j["sequence_bytes"] = r.sequence_bytes;
  return j;
}

MetricsLog::MetricsLog(const std::filesystem::path& file, int64_t resumed_step) {
  std::vector<std::string> kept;
  if (std::filesystem::exists(file)) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A torn last line (crash mid-write) is dropped with everything after the resumed step.
      if (j.is_discarded() || !j.contains("step") || j["step"].get<int64_t>() > resumed_step) continue;
      kept.push_back(line);
    }
    std::string text;
    for (const auto& l : kept) text += l + "\n";
    write_file_atomically(file, text);
  }
  out_.open(file, std::ios::app);
  CVX_CHECK_AS(SystemError, out_.good(), "cannot open ", file.string(), " for appending");
}

void MetricsLog::write(const StepReport& report) {
  out_ << step_json(report).dump() << "\n";
  out_.flush();
}

}  // namespace cvx
